"""The loaded world model and the one thread that runs it.

All model work (encoding and CEM) runs on a single worker thread, off the
event loop: HTTP stays responsive while a plan runs, and the model never sees
two forwards at once (torch parallelises each forward over its own intra-op
threads, and one GPU gains nothing from interleaving). Requests queue for the
worker in arrival order.

Plans go through a micro-batcher (server/batcher.py): concurrent requests
with equal planner settings are planned together in one batched CEM call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import resource
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import numpy as np
import torch

import models
from models import Latent, WorldModel, load_model
from planning import CEMConfig, PlanResult, plan
from server.batcher import MicroBatcher, Planned, Prepared
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


class Engine:
    """A model in eval mode on a device, the default CEM config and a worker thread.

    max_batch, batch_wait_s: micro-batching (server/batcher.py); max_batch 1
    plans every request alone.
    """

    def __init__(self, model: WorldModel, device: torch.device, base_config: CEMConfig,
                 max_batch: int = 1, batch_wait_s: float = 0.0) -> None:
        self.model = model
        self.device = device
        self.base_config = base_config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wm-model")
        self.batcher = MicroBatcher(self._executor, self._plan_many, max_batch, batch_wait_s)

    @classmethod
    def load(cls, settings: Settings) -> Engine:
        """Load the model once and build the default planner config (blocking)."""
        device = resolve_device(settings.device)
        if settings.torch_threads is not None:
            torch.set_num_threads(settings.torch_threads)
        started = time.monotonic()
        model = load_model(settings.model, device=str(device))
        # Paper defaults where the FLOPs are affordable, the smaller preset on
        # CPU, with the model's own recommendations (artifact metadata) on top.
        preset = CEMConfig.for_model(model, device.type)
        base = dataclasses.replace(preset, **settings.planner.model_dump(exclude_none=True))
        engine = cls(model, device, base, settings.micro_batch_max if settings.micro_batch else 1,
                     settings.micro_batch_wait_ms / 1000.0)
        log.info(
            "loaded model %s (%d parameters) on %s in %.1f s; planner defaults %s; micro-batches of up to %d",
            model.config.name,
            model.num_parameters(),
            device,
            time.monotonic() - started,
            base,
            engine.batcher.max_batch,
        )
        return engine

    # -- running on the worker ----------------------------------------------

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn`` on the model thread and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def plan_queued(self, prepare: Callable[[], Prepared], config: CEMConfig, seed: int | None,
                          deadline: float | None) -> Planned:
        """Prepare (on the worker: encode, warm start) and plan one request,
        micro-batched with other waiting requests of the same config."""
        return await self.batcher.submit(prepare, config, seed, deadline)

    def _plan_many(self, inputs: list[Prepared], config: CEMConfig, seeds: list[int | None],
                   deadlines: list[float | None], done: Callable[[int, PlanResult, np.ndarray], None]) -> None:
        """Worker: one CEM call for B prepared requests; each is handed to `done` when it stops."""
        init = None
        if any(p.init_mean is not None for p in inputs):
            cold = torch.zeros(1, config.horizon, self.model.config.action_dim, device=self.device)
            init = torch.cat([cold if p.init_mean is None else p.init_mean for p in inputs])  # (B, H, A)
        plan(self.model, Latent.cat([p.z_obs for p in inputs]), Latent.cat([p.z_goal for p in inputs]),
             config, init_mean=init, seeds=seeds, deadline=deadlines,
             on_done=lambda i, result: done(i, result, self.env_actions(result.actions)))

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


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * resource.getpagesize()
