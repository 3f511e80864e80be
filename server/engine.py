"""The loaded world model, and the model work of one batch of plan requests.

The engine is the only part of the server that touches torch. It is built
from explicit arguments (a model, a device, the default planner config), not
from HTTP settings, and is driven by one thread, the scheduler's worker
(server/scheduler.py), which calls:

* ``start(inputs)``: encode every frame of the batch in one forward pass,
  roll the model through each request's pending actions (one rollout for
  the batch), gather the warm starts, and open a steppable plan
  (``planning.PlanBatch``);
* ``step(run)``: one planner iteration for every request still planning,
  returning the requests that finished, with their actions in env units;
* ``cancel(run, i)``: request ``i`` stops before the next iteration.

Data flows one way: inputs in, outputs back as values.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import models
from models import DEFAULT_MODEL_PATH, Latent, WorldModel, load_model
from models.artifact import model_identity
from models.flops import rollout_gflop
from models.inference import InferenceConfig
from planning import PlanBatch, PlannerConfig, PlanResult
from planning.registry import SOLVERS
from planning.subgoals import SubgoalGraph, SubgoalGraphError, default_path
from server.memory import max_rss_bytes, rss_bytes

log = logging.getLogger(__name__)


def _weights_identity(model: WorldModel) -> str:
    h = hashlib.sha256(repr(model.config.to_dict()).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; a CUDA device must exist."""
    device = models.resolve_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available; use cpu or auto")
    return device


@dataclass(frozen=True)
class ModelInfo:
    """What the planning service needs to know of the model: read once, at load.

    action_bounds: raw env action bounds (raw_action_dim,) low and high, or None.
    """

    model_id: str
    image_size: int
    proprio_dim: int
    action_dim: int
    frameskip: int
    action_bounds: tuple[np.ndarray, np.ndarray] | None
    subgoals: bool  # a latent subgoal graph is loaded (planner.subgoals can be served)


@dataclass(frozen=True, eq=False)
class PlanInput:
    """What the model needs for one request.

    obs: (H, W, 3) RGB uint8 or float32 in [0, 1], any size (the model's
        transform resizes it). obs_proprio: (proprio_dim,) raw env units or None.
    goal, goal_proprio: the goal frame to encode, or None when ``goal_latent``
        (1, ...) is already known (a replan).
    init_mean: (1, H, A) warm start in model space, or None (cold).
    init_elites: (1, e, H, A) the last plan's kept elites shifted like the
        mean (iCEM), or None.
    pending: (k * frameskip, raw_action_dim) float32 env actions the robot
        executes after ``obs`` and before the plan takes effect, or None: the
        plan starts from the latent the model predicts after them.
    """

    obs: np.ndarray
    obs_proprio: np.ndarray | None
    config: PlannerConfig
    goal: np.ndarray | None = None
    goal_proprio: np.ndarray | None = None
    goal_latent: Latent | None = None
    init_mean: torch.Tensor | None = None
    init_elites: torch.Tensor | None = None
    seed: int | None = None
    deadline: float | None = None
    pending: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.goal is None) == (self.goal_latent is None):
            raise ValueError("a plan input needs exactly one of a goal frame and a goal latent")
        if self.pending is not None and (self.pending.ndim != 2 or len(self.pending) == 0):
            raise ValueError(f"pending actions must be (k * frameskip, raw_action_dim), k >= 1; got "
                             f"{self.pending.shape}")

    @property
    def batch_key(self) -> tuple[PlannerConfig, bool]:
        """Inputs with equal keys can be planned in one batch: one config, and kept elites for all or none."""
        return self.config, self.init_elites is not None


@dataclass(frozen=True)
class PlanOutput:
    """One request's plan: the planner's result, its actions in env units
    (H * frameskip, raw_action_dim), the goal latent (1, ...) for the session,
    and where its time went."""

    result: PlanResult
    actions: np.ndarray
    goal_latent: Latent
    encode_s: float  # the batch's encoding pass
    plan_s: float  # from the batch's first iteration to this request's answer
    batch: int  # requests planned together
    subgoal: dict[str, Any] | None = None  # {"used", "path_steps"} when planner.subgoals was on


@dataclass(eq=False)
class Run:
    """A batch being planned: the planner's state and what each request needs back."""

    plan: PlanBatch
    goals: list[Latent]
    encode_s: float
    subgoals: list[dict[str, Any] | None] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def size(self) -> int:
        return len(self.goals)


def load_subgoals(option: str, model_path: Path, model_id: str) -> SubgoalGraph | None:
    """The subgoal graph the server plans with: "off" -> None; "auto" -> the model's
    ``<name>.subgoals.pt`` if it exists and was built with this model (else None, with a
    warning); else that file, which must exist and match. A graph built with another model is
    refused: its latents mean nothing to this encoder."""
    if option == "off":
        return None
    path = default_path(model_path) if option == "auto" else Path(option)
    if option == "auto" and not path.is_file():
        return None
    if not path.is_file():
        raise FileNotFoundError(f"subgoal graph {path} not found; build it with `python -m training.subgoals build "
                                f"--model {model_path} --dataset DATA --out {path}`, or run with --subgoals off")
    graph = SubgoalGraph.load(path)
    if graph.model_id and graph.model_id != model_id:
        message = (f"{path} was built with another model (identity {graph.model_id}, this model {model_id}); "
                   f"rebuild it with `python -m training.subgoals build --model {model_path} --dataset DATA`")
        if option == "auto":  # e.g. a retrained model beside an old graph: serve, without subgoals
            log.warning("%s; serving without subgoals", message)
            return None
        raise SubgoalGraphError(message)
    log.info("subgoal graph %s: %s", path, graph.describe())
    return graph


class Engine:
    """A model in eval mode on a device, with the server's default planner config."""

    def __init__(self, model: WorldModel, device: torch.device, base_config: PlannerConfig,
                 model_id: str | None = None, subgoals: SubgoalGraph | None = None) -> None:
        """model_id: the model's identity (the artifact's hash, see ``load``); unset, a hash of
        its config and weights. subgoals: the latent subgoal graph plans with
        ``subgoals=True`` search (None: such plans are refused by the service)."""
        self.model = model
        self.device = device
        self.base_config = base_config
        self.model_id = model_id or _weights_identity(model)
        self.subgoals = subgoals

    @classmethod
    def load(cls, path: str | Path | None, device: str = "auto", threads: int | None = None,
             planner: dict[str, Any] | None = None, dtype: str = "fp32", compile: bool = False,
             subgoals: str = "auto") -> Engine:
        """Load the model once and build its default planner config (blocking).

        path: artifact (None: the shipped default). threads: torch intra-op
        threads (None: leave torch's). planner: operator defaults over the
        device preset and the model's own recommendation. dtype, compile:
        the model's inference options (models/inference.py); compilation
        covers the default planner's horizon. subgoals: "auto" (the model's
        ``<name>.subgoals.pt`` beside it, if there is one), "off", or a graph
        file. A loaded graph serves requests that ask for it
        (``planner.subgoals``); ``planner={"subgoals": True}`` makes it the
        default (docs/planning.md: on the wall model it costs near goals).
        """
        dev = resolve_device(device)
        if threads is not None:
            torch.set_num_threads(threads)
        started = time.monotonic()
        model = load_model(path, device=str(dev))
        model_path = Path(path if path is not None else DEFAULT_MODEL_PATH)
        model_id = model_identity(str(model_path))
        graph = load_subgoals(subgoals, model_path, model_id)
        base = PlannerConfig.for_model(model, dev.type).updated(planner or {})
        if base.subgoals and graph is None:
            raise ValueError(f"planner.subgoals is on by default but there is no subgoal graph (--subgoals "
                             f"{subgoals!r}, model {model_path}); build one with `python -m training.subgoals build`")
        if dtype != "fp32" or compile:
            model.configure_inference(InferenceConfig(dtype=dtype, compile=compile,
                                                      compile_horizons=(base.horizon,)))
        log.info("loaded model %s (%d parameters) on %s in %.1f s with %d torch threads; planner defaults %s",
                 model.config.name, model.num_parameters(), dev, time.monotonic() - started,
                 torch.get_num_threads(), base)
        return cls(model, dev, base, model_id, graph)

    # -- one batch, on the worker thread -----------------------------------------

    def start(self, inputs: list[PlanInput]) -> Run:
        """Encode the batch's frames in one forward pass and open its plan.

        Every input must share one planner config (the scheduler batches by it).
        """
        config = inputs[0].config
        if any(p.batch_key != inputs[0].batch_key for p in inputs):
            raise ValueError("a batch must share one planner config, and kept elites for all or none")
        started = time.monotonic()
        frames = [p.obs for p in inputs] + [p.goal for p in inputs if p.goal is not None]
        proprio = [p.obs_proprio for p in inputs] + [p.goal_proprio for p in inputs if p.goal is not None]
        z = self.encode(frames, proprio)  # (N_obs + N_goal_frames, ...)
        n = len(inputs)
        z_obs = self.advance(z.index(slice(0, n)), [p.pending for p in inputs], config.horizon)
        goals: list[Latent] = []
        k = n
        for p in inputs:
            if p.goal_latent is not None:
                goals.append(p.goal_latent)
            else:
                goals.append(z.index(slice(k, k + 1)))
                k += 1
        init = None
        if any(p.init_mean is not None for p in inputs):
            cold = torch.zeros(1, config.horizon, self.model.config.action_dim, device=self.device)
            init = torch.cat([cold if p.init_mean is None else p.init_mean.to(self.device) for p in inputs])  # (B, H, A)
        elites = None
        if inputs[0].init_elites is not None:
            elites = torch.cat([p.init_elites.to(self.device) for p in inputs])  # (B, e, H, A)
        targets, subgoals = Latent.cat(goals), [None] * n
        if config.subgoals:
            if self.subgoals is None:
                raise ValueError("planner.subgoals is on but this engine has no subgoal graph")
            # Recomputed from the current frame at every plan: the goal stays the session's, no state is kept.
            targets, chosen = self.subgoals.targets(z_obs, targets, config.subgoal_hops)
            subgoals = [{"used": c["subgoal"], "path_steps": c["path_steps"]} for c in chosen]
        batch = PlanBatch(self.model, z_obs, targets, config, init_mean=init,
                          seeds=[p.seed for p in inputs], deadline=[p.deadline for p in inputs], init_elites=elites,
                          warm=[p.init_mean is not None for p in inputs])
        return Run(batch, goals, time.monotonic() - started, subgoals)

    def step(self, run: Run) -> list[tuple[int, PlanOutput]]:
        """One planner iteration; the requests of ``run`` that finished in it."""
        finished = run.plan.step()
        now = time.monotonic()
        return [(i, PlanOutput(result, self.env_actions(result.actions), run.goals[i], run.encode_s,
                               now - run.started, run.size, run.subgoals[i])) for i, result in finished]

    @staticmethod
    def cancel(run: Run, i: int) -> None:
        run.plan.cancel(i)

    # -- model work ---------------------------------------------------------------

    def encode(self, frames: list[np.ndarray], proprio: list[np.ndarray | None]) -> Latent:
        """Latents of N frames in one encoder pass.

        frames: N arrays (H_i, W_i, 3), uint8 or float32 in [0, 1], each resized
        by the model's own transform; proprio: N arrays (proprio_dim,) or None.
        """
        # (N, 3, S, S): each frame to the device (the model's pinned, non-blocking copy) and
        # through the training transform, then one encoder pass over the batch
        to_device = self.model.to_device
        pixels = torch.cat([self.model.preprocess(to_device(torch.from_numpy(f)[None])) for f in frames])
        state = None
        if self.model.config.proprio_dim:
            raw = torch.from_numpy(np.stack(proprio).astype(np.float32, copy=False))  # (N, P)
            state = self.model.codec.normalize_proprio(to_device(raw))
        with torch.inference_mode():
            return self.model.encode(pixels, state)

    def advance(self, z_obs: Latent, pending: list[np.ndarray | None], horizon: int = 0) -> Latent:
        """Where each request's robot will be when its plan takes effect: its frame's latent rolled
        through its pending actions, in ONE rollout for the batch (never per sample: the planner's
        samples all start from the result).

        z_obs: Latent (B, P, Dv), (B, Ep); pending: B arrays (k_i * frameskip, raw_action_dim) in env
        units, or None (k_i = 0: the frame's own latent); horizon: roll at least this many steps.
        Returns Latent (B, P, Dv), (B, Ep).

        The requests with pending actions are rolled together over max(horizon, k_i) model steps,
        shorter ones padded with the mean action (zeros): the predictor's mask is frame-causal, so
        frame k_i does not depend on the padding after it, and request i takes predicted frame k_i.
        Padding to the plan's horizon keeps the rollout's shape the one a compiled model was
        compiled for (``compile_horizons``), instead of one recompilation per pending count.
        The plan then starts from that one predicted latent, as it starts from one encoded frame:
        ``WorldModel.rollout`` begins its history window at its start frame either way.
        """
        rows = [i for i, p in enumerate(pending) if p is not None]
        if not rows:
            return z_obs
        fs, a = self.model.config.frameskip, self.model.config.action_dim
        steps = [len(pending[i]) // fs for i in rows]
        actions = torch.zeros(len(rows), max(horizon, *steps), a)  # (R, K, A) normalised; zeros pad
        for j, i in enumerate(rows):
            actions[j, :steps[j]] = self.model.codec.to_model(torch.from_numpy(pending[i]))  # (k_i, A)
        idx = torch.tensor(rows, device=self.device)
        with torch.inference_mode():
            z = z_obs.index(idx)
            predicted = self.model.rollout(z, self.model.to_device(actions))  # (R, K, P, Dv), (R, K, Ep)
            last = torch.tensor(steps, device=self.device) - 1
            pick = torch.arange(len(rows), device=self.device)
            visual, proprio = z_obs.visual.clone(), z_obs.proprio.clone()
            visual[idx] = predicted.visual[pick, last].to(visual.dtype)  # (R, P, Dv)
            proprio[idx] = predicted.proprio[pick, last].to(proprio.dtype)  # (R, Ep)
        return Latent(visual, proprio)

    def env_actions(self, actions: torch.Tensor) -> np.ndarray:
        """Normalised (H, action_dim) -> raw env units (H * frameskip, raw_action_dim)."""
        with torch.inference_mode():
            raw = self.model.codec.to_env(actions.unsqueeze(0))[0]
        return raw.detach().to("cpu", torch.float64).numpy()

    def warm_up(self) -> None:
        """Encode a blank frame and run one plan iteration, so the first request is not slow."""
        c = self.model.config
        blank = np.zeros((c.image_size, c.image_size, 3), dtype=np.uint8)
        proprio = np.zeros(c.proprio_dim, dtype=np.float32) if c.proprio_dim else None
        run = self.start([PlanInput(blank, proprio, self.base_config, goal=blank, goal_proprio=proprio, seed=0)])
        run.plan.step()  # one full iteration: allocations of the default chunk size
        run.plan.cancel(0)
        while not run.plan.done:
            run.plan.step()

    # -- cost ---------------------------------------------------------------------

    def plan_gflop(self, config: PlannerConfig) -> float:
        """Analytic GFLOPs of a plan run to its last iteration: the rollouts its
        solver scores (each solver declares them: samples x iterations for CEM
        and MPPI, iCEM's shrinking populations, 4 rollouts' worth per gradient
        step) x one rollout. Scheduling and admission use it; the encoder's
        share is left out, well under 1% of a plan."""
        rollouts = SOLVERS[config.method].rollouts(config, config.max_iterations)
        return rollouts * self.rollout_gflop(config.horizon)

    def rollout_gflop(self, horizon: int) -> float:
        """GFLOPs of one sample's rollout over ``horizon`` steps: the model family's FLOP model,
        the one the benchmarks count with (matmuls only, as the model's ``rollout`` runs): a model
        that brings its own (``rollout_gflop``, e.g. LeWM's ``models/lewm/flops.py``), else
        ``models.flops.rollout_gflop`` of the DINO-WM-style ``WorldModel``."""
        own = getattr(self.model, "rollout_gflop", None)
        return own(horizon) if own is not None else rollout_gflop(self.model.config, horizon)

    # -- identity and health ------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        c = self.model.config
        bounds = None
        if c.action_low is not None and c.action_high is not None:
            bounds = np.asarray(c.action_low, dtype=np.float64), np.asarray(c.action_high, dtype=np.float64)
        return ModelInfo(self.model_id, int(c.image_size), int(c.proprio_dim), int(c.action_dim), int(c.frameskip),
                         bounds, self.subgoals is not None)

    def eval_mode(self) -> bool:
        """True when no submodule trains and no parameter tracks gradients."""
        return not any(m.training for m in self.model.modules()) and not any(
            p.requires_grad for p in self.model.parameters())

    def describe(self) -> dict[str, Any]:
        return {**self.model.describe(), "subgoals": None if self.subgoals is None else self.subgoals.describe()}

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
        return {"kind": "cpu", "rss_bytes": rss_bytes(), "max_rss_bytes": max_rss_bytes(),
                "torch_threads": torch.get_num_threads()}
