"""The solver interface: what differs between planners, and nothing else.

A solver holds the search state of B requests (e.g. CEM's mean and sigma) and
knows how to propose candidates from it and how to learn from their costs.
The driver (`planning.driver.PlanBatch`) owns everything they share:
batching, chunked scoring, seeds, bounds on the candidates, early stopping,
deadlines, cancellation, traces and the final scoring of the plan.

Every method takes `idx`, the (b,) indices of the requests still iterating,
so a request that stopped costs nothing; `it` is the iteration number (the
same for every active request of a batch).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch

from planning.evaluate import Evaluator
from planning.settings import Settings

if TYPE_CHECKING:
    from planning.config import PlannerConfig

Bounds = tuple[torch.Tensor, torch.Tensor] | None  # (A,) low and high in normalised space


class Solver(ABC):
    """Search state for B requests planned together.

    A solver class declares its name (the `method` that picks it), its own
    settings (`settings_type`, one section of `PlannerConfig`, e.g.
    ``planner.icem``), the other solvers' sections it reads (`uses`), and
    what a plan costs (`rollouts`, `cost_settings`): the server's schema,
    limits and admission cost are derived from these.

    mean: (B, H, A) warm start in normalised space (zeros = the mean training
        action), already within `bounds`. seeds: one int per request; every
        random draw of request i comes from a generator seeded with seeds[i]
        and is made before any chunking, so a plan does not depend on the
        chunk size or on the other requests in the batch. init_elites: (B, e, H, A)
    candidates carried over from the last MPC plan (shifted), for a solver that
    keeps elites (iCEM); others ignore them.
    """

    name: ClassVar[str]
    settings_type: ClassVar[type[Settings] | None] = None
    uses: ClassVar[tuple[str, ...]] = ()  # other solvers whose settings this one reads (composites)
    cost_settings: ClassVar[tuple[str, ...]] = ()  # settings paths that scale a plan's cost, besides the driver's
    # True: the solver's phases are laid out over max_iterations (composites: sampling, then gradient steps),
    # so every plan runs that schedule and `warm_max_iterations` does not shorten it
    fixed_schedule: ClassVar[bool] = False

    def __init__(self, config: PlannerConfig, mean: torch.Tensor, seeds: list[int], bounds: Bounds,
                 init_elites: torch.Tensor | None = None) -> None:
        self.config, self.bounds = config, bounds

    @classmethod
    @abstractmethod
    def rollouts(cls, config: PlannerConfig, iterations: int) -> float:
        """Rollouts' worth of work (sequences scored; a gradient step counts as several)
        of `iterations` iterations: the admission cost's unit."""

    @classmethod
    def check(cls, config: PlannerConfig) -> None:
        """Invariants between this solver's settings and the driver's, checked when it is the
        chosen method (override; raise ValueError naming the value)."""

    @abstractmethod
    def propose(self, idx: torch.Tensor, it: int) -> torch.Tensor:
        """Candidates (b, N, H, A) for the active requests; the driver clips them to the bounds."""

    @abstractmethod
    def update(self, idx: torch.Tensor, it: int, candidates: torch.Tensor, costs: torch.Tensor) -> None:
        """Learn from the (clipped) candidates (b, N, H, A) and their costs (b, N)."""

    @abstractmethod
    def result(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The plans of requests `ids`: actions (n, H, A) and their spread (n, H, A)."""

    def kept(self, ids: list[int]) -> torch.Tensor | None:
        """Candidates (n, e, H, A) worth carrying into the next MPC plan, or None."""
        return None

    def step(self, idx: torch.Tensor, it: int, evaluate: Evaluator) -> torch.Tensor:
        """One iteration: propose, score, update. Returns the costs (b, N); the
        driver records their minimum in the loss trace. A solver that is not
        sample-based (gradient refinement) overrides this."""
        candidates = self.clip(self.propose(idx, it))
        costs = evaluate(idx, candidates)
        self.update(idx, it, candidates, costs)
        return costs

    def clip(self, actions: torch.Tensor) -> torch.Tensor:
        return actions if self.bounds is None else actions.clamp(*self.bounds)


def draw_normal(seeds: list[int], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """(B, *shape) standard normal, row i from a generator seeded with seeds[i]
    (B generator calls, not a per-sample loop)."""
    out = torch.empty((len(seeds), *shape), device=device)
    for i, seed in enumerate(seeds):
        g = torch.Generator(device=device).manual_seed(seed)
        out[i] = torch.randn(shape, generator=g, device=device)
    return out
