"""The loaded world model and the one thread that runs it.

All model work (encoding and CEM) runs on a single worker thread, off the
event loop: HTTP stays responsive while a plan runs, and the model never sees
two forwards at once (torch parallelises each forward over its own intra-op
threads, and one GPU gains nothing from interleaving). Requests queue for the
worker in arrival order.

Micro-batching: plans wait in a queue of their own; when the worker takes
one, it takes with it every waiting plan with an equal planner config (up to
`max_batch`) and plans them in one `planning.plan` call, so concurrent
sessions share every forward pass. No timer holds a request back: a batch is
whatever queued while the previous one ran. Each request keeps its own seed,
warm start and deadline, and gets the plan it would have got alone (to float
tolerance). If a batch fails, its requests are retried one by one, so one
bad request cannot fail the others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import numpy as np
import torch

import models
from models import Latent, WorldModel, load_model
from planning import CEMConfig, PlanResult, plan
from server.settings import Settings

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; a CUDA device must exist."""
    device = models.resolve_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available; use cpu or auto")
    return device


@dataclass(eq=False)
class _PlanJob:
    """One request waiting for the planner; `future` lives on `loop`."""

    z_obs: Latent
    z_goal: Latent
    config: CEMConfig
    init_mean: torch.Tensor | None  # (1, H, A) or None (cold)
    seed: int | None
    deadline: float | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future = field(repr=False)


class Engine:
    """A model in eval mode on a device, the default CEM config and a worker thread.

    max_batch: most requests planned together (1 turns micro-batching off).
    on_batch: called (on the worker thread) with each batch's size.
    """

    def __init__(self, model: WorldModel, device: torch.device, base_config: CEMConfig,
                 max_batch: int = 1) -> None:
        self.model = model
        self.device = device
        self.base_config = base_config
        self.max_batch = max_batch
        self.on_batch: Callable[[int], None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wm-model")
        self._pending: list[_PlanJob] = []
        self._lock = threading.Lock()
        self._drain_queued = False  # a _drain is queued on or running on the worker

    @classmethod
    def load(cls, settings: Settings) -> Engine:
        """Load the model once and build the default planner config (blocking)."""
        device = resolve_device(settings.device)
        if settings.torch_threads is not None:
            torch.set_num_threads(settings.torch_threads)
        started = time.monotonic()
        model = load_model(settings.model, device=str(device))
        # Paper defaults where the FLOPs are affordable; the smaller preset on CPU.
        preset = CEMConfig() if device.type == "cuda" else CEMConfig.cpu_preset()
        base = dataclasses.replace(preset, **settings.planner.model_dump(exclude_none=True))
        engine = cls(model, device, base, settings.micro_batch_max if settings.micro_batch else 1)
        log.info(
            "loaded model %s (%d parameters) on %s in %.1f s; planner defaults %s; micro-batches of up to %d",
            model.config.name,
            model.num_parameters(),
            device,
            time.monotonic() - started,
            base,
            engine.max_batch,
        )
        return engine

    # -- running on the worker ----------------------------------------------

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn`` on the model thread and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def plan_queued(
        self,
        z_obs: Latent,
        z_goal: Latent,
        config: CEMConfig,
        init_mean: torch.Tensor | None,
        seed: int | None,
        deadline: float | None,
    ) -> tuple[PlanResult, np.ndarray, float]:
        """Plan one request on the model thread, batched with other waiting
        requests of the same config. Returns the plan, its actions in env units
        (see `env_actions`) and the seconds the (shared) plan call took."""
        loop = asyncio.get_running_loop()
        job = _PlanJob(z_obs, z_goal, config, init_mean, seed, deadline, loop, loop.create_future())
        with self._lock:
            self._pending.append(job)
            start = not self._drain_queued
            self._drain_queued = True
        if start:
            self._executor.submit(self._drain)
        return await job.future

    def _drain(self) -> None:
        """Worker: plan the oldest waiting request with every compatible one."""
        with self._lock:
            config = self._pending[0].config
            batch = [j for j in self._pending if j.config == config][: self.max_batch]
            self._pending = [j for j in self._pending if all(j is not b for b in batch)]
        try:
            outcomes: list[Any] = self._plan_batch(batch)
        except Exception as exc:  # noqa: BLE001 - retried alone below; a lone failure goes to its request
            if len(batch) == 1:
                outcomes = [exc]
            else:
                log.warning("a batch of %d plans failed (%s); planning them one by one", len(batch), exc)
                outcomes = []
                for job in batch:
                    try:
                        outcomes.extend(self._plan_batch([job]))
                    except Exception as one:  # noqa: BLE001 - handed to the request that caused it
                        outcomes.append(one)
        for job, outcome in zip(batch, outcomes):
            job.loop.call_soon_threadsafe(_settle, job.future, outcome)
        with self._lock:
            if not self._pending:
                self._drain_queued = False
                return
        # Requeue behind the work that arrived meanwhile (their encodes), so
        # that the next batch can include the plans those encodes lead to.
        try:
            self._executor.submit(self._drain)
        except RuntimeError as exc:  # shutting down: nothing will plan them
            with self._lock:
                stranded, self._pending = self._pending, []
            for job in stranded:
                job.loop.call_soon_threadsafe(_settle, job.future, exc)

    def _plan_batch(self, batch: list[_PlanJob]) -> list[tuple[PlanResult, np.ndarray, float]]:
        config = batch[0].config
        init = None
        if any(j.init_mean is not None for j in batch):
            shape = (1, config.horizon, self.model.config.action_dim)
            init = torch.cat([j.init_mean if j.init_mean is not None else torch.zeros(shape, device=self.device)
                              for j in batch])  # (B, H, A); zeros = a cold start, as plan() does
        started = time.monotonic()
        results = plan(self.model, Latent.cat([j.z_obs for j in batch]), Latent.cat([j.z_goal for j in batch]),
                       config, init_mean=init, seeds=[j.seed for j in batch],
                       deadline=[j.deadline for j in batch])
        plan_s = time.monotonic() - started
        if self.on_batch is not None:
            self.on_batch(len(batch))
        return [(r, self.env_actions(r.actions), plan_s) for r in results]

    # -- model work (call on the worker) ----------------------------------------

    def encode(self, pixels: np.ndarray, proprio: np.ndarray | None) -> Latent:
        """Latent of one frame: pixels (H, W, 3) uint8 or float32 in [0, 1], proprio (P,)."""
        frames = torch.from_numpy(pixels).unsqueeze(0).to(self.device)  # (1, H, W, 3)
        state = None
        if proprio is not None:
            state = torch.from_numpy(proprio).unsqueeze(0).to(self.device)  # (1, P)
        with torch.inference_mode():
            return self.model.encode_observation(frames, state)

    def plan(
        self,
        z_obs: Latent,
        z_goal: Latent,
        config: CEMConfig,
        init_mean: torch.Tensor | None,
        seed: int | None,
        deadline: float | None,
    ) -> PlanResult:
        """One CEM plan for one observation (batch of 1)."""
        return plan(
            self.model, z_obs, z_goal, config, init_mean=init_mean, seeds=[seed], deadline=deadline
        )[0]

    def env_actions(self, actions: torch.Tensor) -> np.ndarray:
        """Normalised (H, action_dim) -> raw env units (H * frameskip, raw_action_dim)."""
        with torch.inference_mode():
            raw = self.model.codec.to_env(actions.unsqueeze(0))[0]
        return raw.detach().to("cpu", torch.float64).numpy()

    def warm_up(self) -> None:
        """Encode a blank frame and run a one-iteration plan, so the first request is not slow."""
        size = self.model.config.image_size
        blank = np.zeros((size, size, 3), dtype=np.uint8)
        proprio = None
        if self.model.config.proprio_dim:
            proprio = np.zeros(self.model.config.proprio_dim, dtype=np.float32)
        z = self.encode(blank, proprio)
        # A deadline already passed stops CEM after its first iteration.
        self.plan(z, z, self.base_config, None, 0, deadline=time.monotonic())

    # -- identity and health -----------------------------------------------------

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    @property
    def proprio_dim(self) -> int:
        return int(self.model.config.proprio_dim)

    @property
    def frameskip(self) -> int:
        return int(self.model.config.frameskip)

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Raw env action bounds (raw_action_dim,), if the model knows them."""
        low, high = self.model.config.action_low, self.model.config.action_high
        if low is None or high is None:
            return None
        return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)

    def eval_mode(self) -> bool:
        """True when no submodule trains and no parameter tracks gradients."""
        return not any(m.training for m in self.model.modules()) and not any(
            p.requires_grad for p in self.model.parameters()
        )

    def describe(self) -> dict[str, Any]:
        return dict(self.model.describe())

    def memory(self) -> dict[str, Any]:
        """Device memory in bytes (CUDA allocator), or the process's RSS on CPU."""
        if self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            props = torch.cuda.get_device_properties(index)
            return {
                "kind": "cuda",
                "name": props.name,
                "total_bytes": int(props.total_memory),
                "allocated_bytes": int(torch.cuda.memory_allocated(index)),
                "reserved_bytes": int(torch.cuda.memory_reserved(index)),
                "max_allocated_bytes": int(torch.cuda.max_memory_allocated(index)),
            }
        return {
            "kind": "cpu",
            "rss_bytes": _rss_bytes(),
            # ru_maxrss is in KiB on Linux.
            "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "torch_threads": torch.get_num_threads(),
        }


def _settle(future: asyncio.Future, outcome: Any) -> None:
    if future.done():  # the request was cancelled meanwhile
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * resource.getpagesize()
