"""The planning driver: B requests planned together, one solver iteration per step.

`PlanBatch` owns what every solver shares: per-request seeds (drawn before
any chunking), the chunked, OOM-safe evaluator, action bounds, early
stopping, deadlines, cancellation, loss traces, and the final scoring of
each returned plan. A solver (`planning.solver.Solver`) only proposes
candidates and learns from their costs.

A caller steps the batch (`step()`), and each request comes back exactly
once, as soon as it stops: converged, deadline, max_iterations or
cancelled. A server can thus interleave batches, answer each request as it
finishes, and stop a request whose client left. `plan()` is the plain loop.
The solver is the one `config.method` names in `planning.registry.SOLVERS`.

Budgets (per request): at most `max_iterations`, or `warm_max_iterations`
if smaller when the request starts from a previous plan (an MPC replan):
a warm start begins near a solution, so it needs fewer iterations
(measured: docs/benchmarks.md, "Warm starts"). Composites lay their phases
over max_iterations (`Solver.fixed_schedule`) and always run them all.

Early stopping (per request): after `min_iterations`, stop once the best
loss so far improved by less than `min_improvement` (relative) over the last
`patience` iterations. Deadlines: a request stops when the next iteration
would pass its deadline; at least one iteration always runs. The loss
numbers cost one host sync per iteration (B floats), the only one in the
loop. A request's plan does not depend on the others in the batch (to float
tolerance).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

import torch

from models import Latent, WorldModel
from planning.config import PlannerConfig
from planning.evaluate import Evaluator
from planning.registry import SOLVERS
from planning.result import PlanResult


class PlanBatch:
    """B requests planned together, one solver iteration per `step()`.

    z_obs, z_goal: Latent (B, P, Dv), (B, Ep) of the current and goal frames.
    init_mean: (B, H, A) warm start in normalised space, or None (zeros: the
        mean training action). seeds: one per request (None = random,
        reported back in the result). deadline: absolute `time.monotonic()`
        seconds, for all requests or one per request (None = none).
    init_elites: (B, e, H, A) the last plans' kept elites shifted like the
        mean (`PlanResult.elites`, shifted by `warm_start`), for iCEM; other
        solvers ignore them.
    warm: which requests start from a previous plan (their budget is
        `cfg.warm_max_iterations`, if smaller); default: all of them when
        init_mean is given, none otherwise.
    """

    def __init__(self, model: WorldModel, z_obs: Latent, z_goal: Latent, cfg: PlannerConfig,
                 init_mean: torch.Tensor | None = None, seeds: Sequence[int | None] | None = None,
                 deadline: float | Sequence[float | None] | None = None, *,
                 init_elites: torch.Tensor | None = None, warm: Sequence[bool] | None = None) -> None:
        b = z_obs.visual.shape[0]
        h, a = cfg.horizon, model.config.action_dim
        dev = model.device
        self._seeds = [secrets.randbits(63) if sd is None else int(sd) for sd in (seeds or [None] * b)]
        if len(self._seeds) != b:
            raise ValueError(f"got {len(self._seeds)} seeds for {b} requests")
        self._deadlines = list(deadline) if isinstance(deadline, Sequence) else [deadline] * b
        if len(self._deadlines) != b:
            raise ValueError(f"got {len(self._deadlines)} deadlines for {b} requests")
        if init_mean is not None and tuple(init_mean.shape) != (b, h, a):
            raise ValueError(f"init_mean has shape {tuple(init_mean.shape)}; expected {(b, h, a)}")
        if init_elites is not None and (init_elites.dim() != 4 or init_elites.shape[0] != b
                                        or tuple(init_elites.shape[2:]) != (h, a)):
            raise ValueError(f"init_elites has shape {tuple(init_elites.shape)}; expected {(b, 'e', h, a)}")
        warm = [init_mean is not None] * b if warm is None else [bool(w) for w in warm]
        if len(warm) != b or (init_mean is None and any(warm)):
            raise ValueError(f"warm must be {b} flags, true only where init_mean gives a previous plan")
        warm_budget = cfg.max_iterations if SOLVERS[cfg.method].fixed_schedule else min(cfg.max_iterations,
                                                                                        cfg.warm_max_iterations)
        self._budgets = [warm_budget if w else cfg.max_iterations for w in warm]
        bounds = None
        if model.config.action_low is not None:
            lo, hi = model.codec.model_bounds(model.config.action_low, model.config.action_high)
            bounds = lo.to(dev), hi.to(dev)
        self.cfg, self._device = cfg, dev
        with torch.inference_mode():
            mean = torch.zeros(b, h, a, device=dev) if init_mean is None else init_mean.to(dev, torch.float32).clone()
            if bounds is not None:
                mean = mean.clamp(*bounds)
            elites = None if init_elites is None else init_elites.to(dev, torch.float32)
            self._solver = SOLVERS[cfg.method](cfg, mean, self._seeds, bounds, elites)
            self._evaluate = Evaluator(model, z_obs.to(dev), z_goal.to(dev), cfg)
        self._traces: list[list[float]] = [[] for _ in range(b)]
        self._reasons = ["max_iterations"] * b
        self._active = list(range(b))
        self._cancelled: list[int] = []  # left `active`, not yet returned
        self._it = 0
        self._iter_seconds = 0.0  # the last iteration alone: the deadline check's estimate

    @property
    def size(self) -> int:
        return len(self._seeds)

    @property
    def active(self) -> list[int]:
        """Request indices still iterating."""
        return list(self._active)

    @property
    def done(self) -> bool:
        """True once every request has been returned by `step()`."""
        return not self._active and not self._cancelled

    @property
    def iterations(self) -> int:
        """Iterations run so far (by every request still active)."""
        return self._it

    def cancel(self, i: int) -> None:
        """Request i stops: the next `step()` returns it with stop_reason
        "cancelled" (its current plan, scored) and spends no further iteration
        on it. Cancelling a finished or already cancelled request is a no-op."""
        if i in self._active:
            self._active.remove(i)
            self._reasons[i] = "cancelled"
            self._cancelled.append(i)

    def step(self) -> list[tuple[int, PlanResult]]:
        """Run one iteration for every active request (after the deadline check)
        and return (index, result) for every request that finished during this
        call, each scored. Each request is returned exactly once; after the
        last one, `step()` returns []."""
        finished, self._cancelled = self._cancelled, []
        with torch.inference_mode():
            if self._it > 0 and self._active:
                now = time.monotonic()
                late = [i for i in self._active
                        if self._deadlines[i] is not None and now + self._iter_seconds > self._deadlines[i]]
                for i in late:
                    self._reasons[i] = "deadline"
                self._active = [i for i in self._active if i not in late]
                finished += late
            if self._active:
                finished += self._iterate()
            return self._finish(finished)

    def _iterate(self) -> list[int]:
        """One solver iteration on the active requests; returns those that stopped."""
        t0 = time.monotonic()
        idx = torch.tensor(self._active, device=self._device)
        costs = self._solver.step(idx, self._it, self._evaluate)  # (b, N)
        best = costs.min(dim=1).values.tolist()  # the one host sync: early stopping needs the numbers
        self._it += 1
        still, stopped = [], []
        for i, loss in zip(self._active, best):
            self._traces[i].append(loss)
            if _converged(self._traces[i], self.cfg):
                self._reasons[i] = "converged"
                stopped.append(i)
            elif self._it >= self._budgets[i]:
                stopped.append(i)  # reason stays "max_iterations"
            else:
                still.append(i)
        self._active = still
        self._iter_seconds = time.monotonic() - t0
        return stopped

    def _finish(self, ids: list[int]) -> list[tuple[int, PlanResult]]:
        """Score the returned plans themselves (one rollout each: cheap) so `loss` is honest."""
        if not ids:
            return []
        ids = sorted(ids)
        actions, sigma = self._solver.result(ids)  # (n, H, A) each
        req = torch.tensor(ids, device=self._device)
        losses = self._evaluate(req, actions[:, None]).squeeze(1)
        counts = torch.stack([self._evaluate.rollouts[req], self._evaluate.grad_rollouts[req]], dim=1)
        losses, counts = losses.tolist(), counts.tolist()
        kept = self._solver.kept(ids)
        return [(i, PlanResult(actions=actions[k].clone(), sigma=sigma[k].clone(), loss=losses[k],
                               loss_trace=self._traces[i], iterations=len(self._traces[i]),
                               stop_reason=self._reasons[i], seed=self._seeds[i], method=self.cfg.method,
                               rollouts=counts[k][0], grad_rollouts=counts[k][1],
                               elites=None if kept is None else kept[k].clone()))
                for k, i in enumerate(ids)]


def plan(model: WorldModel, z_obs: Latent, z_goal: Latent, cfg: PlannerConfig,
         init_mean: torch.Tensor | None = None, seeds: Sequence[int | None] | None = None,
         deadline: float | Sequence[float | None] | None = None, *,
         init_elites: torch.Tensor | None = None, warm: Sequence[bool] | None = None) -> list[PlanResult]:
    """Plan for B requests (arguments as `PlanBatch`): step until every request
    has stopped. Returns B PlanResults, in request order."""
    batch = PlanBatch(model, z_obs, z_goal, cfg, init_mean, seeds, deadline, init_elites=init_elites, warm=warm)
    results: list[PlanResult | None] = [None] * batch.size
    while not batch.done:
        for i, result in batch.step():
            results[i] = result
    return [r for r in results if r is not None]


def _converged(trace: list[float], cfg: PlannerConfig) -> bool:
    """Relative improvement of the running best over the last `patience` iterations."""
    n = len(trace)
    if n < max(cfg.min_iterations, cfg.patience + 1):
        return False
    before = min(trace[: n - cfg.patience])
    now = min(trace)
    return before - now <= cfg.min_improvement * max(abs(before), 1e-12)
