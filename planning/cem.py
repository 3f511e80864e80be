"""Batched, chunked CEM in the world model's latent space.

One call plans for B requests at once. Every iteration draws
`a = mu + sigma * eps` for all S samples of all active requests (sample 0 is
mu itself), scores them with one rollout per chunk of samples, and refits mu
and sigma to the top-k. The observation and goal are latents, encoded once by
the caller; the planner never sees an image.

Exactness of chunking: eps for every (request, iteration, sample) is drawn up
front from the request's own generator, before any chunking, so a seed gives
the same plan whatever the chunk size and whatever other requests share the
batch.

Early stopping (per request): after `min_iterations`, stop once the best loss
so far improved by less than `min_improvement` (relative) over the last
`patience` iterations; stop a request when the next iteration would pass its
deadline (one deadline for all, or one per request). This needs one host
sync per iteration (B floats), the only one in the loop. A request's plan
does not depend on the others in the batch (to float tolerance), so a server
may batch concurrent requests.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from models import Latent, WorldModel
from planning.config import CEMConfig
from planning.objectives import objective

log = logging.getLogger(__name__)


@dataclass
class PlanResult:
    """One request's plan. actions/sigma: (H, action_dim) normalised model space."""

    actions: torch.Tensor
    sigma: torch.Tensor
    loss: float  # objective of `actions` itself
    loss_trace: list[float] = field(default_factory=list)  # best sample loss per iteration
    iterations: int = 0
    stop_reason: str = "max_iterations"  # "converged" | "max_iterations" | "deadline"
    seed: int = 0


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class _Evaluator:
    """Scores action sequences with chunked rollouts; halves the chunk on OOM."""

    def __init__(self, model: WorldModel, z_obs: Latent, z_goal: Latent, cfg: CEMConfig) -> None:
        self.model, self.z_obs, self.z_goal, self.cfg = model, z_obs, z_goal, cfg
        self.chunk = cfg.chunk_size or self._chunk_from_budget()

    def _chunk_from_budget(self) -> int:
        budget = self.cfg.memory_budget_mb * 2**20
        if self.model.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.model.device)
            budget = min(budget, 0.5 * free)
        return max(1, int(budget // self.model.rollout_bytes_per_sample(self.cfg.horizon)))

    def __call__(self, req: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
        """req: (b,) request indices; samples: (b, S, H, A) -> losses (b, S)."""
        b, s, h, a = samples.shape
        flat = samples.reshape(b * s, h, a)
        out = torch.empty(b * s, device=samples.device, dtype=samples.dtype)
        i = 0
        while i < b * s:
            j = min(b * s, i + self.chunk)
            try:
                z_obs, z_goal = self._latents(self.z_obs, req, i, j, s), self._latents(self.z_goal, req, i, j, s)
                pred = self.model.rollout(z_obs, flat[i:j])
                out[i:j] = objective(pred, z_goal, self.cfg.objective, self.cfg.alpha, self.cfg.base)
            except (RuntimeError, torch.OutOfMemoryError) as exc:
                if not _is_oom(exc) or self.chunk == 1:
                    raise
                self.chunk //= 2
                log.warning("out of memory at chunk %d; retrying with %d", self.chunk * 2, self.chunk)
                continue
            i = j
        return out.view(b, s)

    @staticmethod
    def _latents(z: Latent, req: torch.Tensor, i: int, j: int, s: int) -> Latent:
        """Latents of flat samples i..j-1 (S per request): a broadcast view when they
        all belong to one request (no copy of the latent per sample), else a gather."""
        first, last = i // s, (j - 1) // s
        if first == last:
            one = z.index(req[first:first + 1])  # (1, ...)
            return Latent(one.visual.expand(j - i, *one.visual.shape[1:]), one.proprio.expand(j - i, -1))
        return z.index(req[first:last + 1].repeat_interleave(s)[i - first * s:j - first * s])


def _draw_noise(b: int, cfg: CEMConfig, action_dim: int, seeds: list[int], device: torch.device) -> torch.Tensor:
    """(B, opt_steps, S, H, A) standard normal, each request from its own seed; sample 0 is zero (= mu)."""
    shape = (cfg.opt_steps, cfg.num_samples, cfg.horizon, action_dim)
    noise = torch.empty((b, *shape), device=device)
    for i, seed in enumerate(seeds):  # B generators, not a per-sample loop
        g = torch.Generator(device=device).manual_seed(seed)
        noise[i] = torch.randn(shape, generator=g, device=device)
    noise[:, :, 0] = 0.0
    return noise


def plan(model: WorldModel, z_obs: Latent, z_goal: Latent, cfg: CEMConfig,
         init_mean: torch.Tensor | None = None, seeds: list[int | None] | None = None,
         deadline: float | Sequence[float | None] | None = None,
         on_done: Callable[[int, PlanResult], None] | None = None) -> list[PlanResult]:
    """Plan for B requests.

    z_obs, z_goal: Latent (B, P, Dv), (B, Ep) of the current and goal frames.
    init_mean: (B, H, A) warm start in normalised space, or None (zeros: the
        mean training action). seeds: one per request (None = random, reported
        back in the result). deadline: absolute `time.monotonic()` seconds,
        for all requests or one per request (None = none); at least one
        iteration always runs. on_done(i, result): called as soon as request i
        stops (converged or deadline) while others go on, so a caller serving
        several clients can answer each at once; without it, every plan is
        scored at the end in one pass.
    Returns B PlanResults.
    """
    b = z_obs.visual.shape[0]
    h, s, a = cfg.horizon, cfg.num_samples, model.config.action_dim
    dev = model.device
    seeds = [secrets.randbits(63) if sd is None else int(sd) for sd in (seeds or [None] * b)]
    if len(seeds) != b:
        raise ValueError(f"got {len(seeds)} seeds for {b} requests")
    deadlines = list(deadline) if isinstance(deadline, Sequence) else [deadline] * b
    if len(deadlines) != b:
        raise ValueError(f"got {len(deadlines)} deadlines for {b} requests")
    if init_mean is not None and tuple(init_mean.shape) != (b, h, a):
        raise ValueError(f"init_mean has shape {tuple(init_mean.shape)}; expected {(b, h, a)}")
    bounds = None
    if model.config.action_low is not None:
        lo, hi = model.codec.model_bounds(model.config.action_low, model.config.action_high)
        bounds = lo.to(dev), hi.to(dev)

    with torch.inference_mode():
        mu = torch.zeros(b, h, a, device=dev) if init_mean is None else init_mean.to(dev, torch.float32).clone()
        if bounds is not None:
            mu = mu.clamp(*bounds)
        sigma = torch.full((b, h, a), cfg.var_scale, device=dev)
        noise = _draw_noise(b, cfg, a, seeds, dev)
        evaluate = _Evaluator(model, z_obs.to(dev), z_goal.to(dev), cfg)
        traces: list[list[float]] = [[] for _ in range(b)]
        reasons = ["max_iterations"] * b
        results: list[PlanResult | None] = [None] * b

        def finish(ids: list[int]) -> None:
            """Score the returned plans themselves (one sample each: cheap) so `loss` is honest."""
            if not ids:
                return
            final = evaluate(torch.tensor(ids, device=dev), mu[ids][:, None]).squeeze(1).tolist()
            for i, loss in zip(ids, final):
                results[i] = PlanResult(actions=mu[i], sigma=sigma[i], loss=loss, loss_trace=traces[i],
                                        iterations=len(traces[i]), stop_reason=reasons[i], seed=seeds[i])
                if on_done is not None:
                    on_done(i, results[i])

        active = list(range(b))
        iter_time = 0.0
        for it in range(cfg.opt_steps):
            if it > 0:
                now = time.monotonic()
                late = [i for i in active if deadlines[i] is not None and now + iter_time > deadlines[i]]
                for i in late:
                    reasons[i] = "deadline"
                active = [i for i in active if i not in late]
                if on_done is not None:
                    finish(late)
                if not active:
                    break
            t0 = time.monotonic()
            idx = torch.tensor(active, device=dev)
            samples = mu[idx, None] + sigma[idx, None] * noise[idx, it]  # (b, S, H, A)
            if bounds is not None:
                samples = samples.clamp(*bounds)
            losses = evaluate(idx, samples)  # (b, S)
            top = losses.topk(cfg.topk, dim=1, largest=False, sorted=True)
            elites = samples.gather(1, top.indices[..., None, None].expand(-1, -1, h, a))  # (b, k, H, A)
            mu[idx] = elites.mean(dim=1)
            sigma[idx] = elites.std(dim=1, unbiased=False).clamp_min(cfg.min_std)
            best = top.values[:, 0].tolist()  # the one host sync: early stopping needs the numbers
            still, stopped = [], []
            for i, loss in zip(active, best):
                traces[i].append(loss)
                if _converged(traces[i], cfg):
                    reasons[i] = "converged"
                    stopped.append(i)
                else:
                    still.append(i)
            active = still
            if on_done is not None and active:
                finish(stopped)
            iter_time = time.monotonic() - t0
            if not active:
                break
        finish([i for i in range(b) if results[i] is None])
    return [r for r in results if r is not None]


def _converged(trace: list[float], cfg: CEMConfig) -> bool:
    """Relative improvement of the running best over the last `patience` iterations."""
    n = len(trace)
    if n < max(cfg.min_iterations, cfg.patience + 1):
        return False
    before = min(trace[: n - cfg.patience])
    now = min(trace)
    return before - now <= cfg.min_improvement * max(abs(before), 1e-12)
