"""Composite solvers: sample first, then refine the sampler's plan by gradient.

Sampling (CEM or iCEM) finds the basin; a few Adam steps through the model
then polish the plan, cheaper per iteration than another round of hundreds
of samples. The first `opt_steps - grad_iterations` iterations sample; the
gradient phase starts from the sampler's plan (and, for grad_starts > 1,
copies perturbed by the sampler's final sigma). Early stopping may end a
plan during sampling, then it is never refined.
"""

from __future__ import annotations

import torch

from planning.cem import CEM
from planning.config import CEMConfig
from planning.evaluate import Evaluator
from planning.gradient import Gradient
from planning.icem import ICEM
from planning.solver import Bounds, Solver


class SampleThenGradient(Solver):
    """State: the sampler's, then the Gradient solver's (built at the switch, for all B)."""

    sampler_type: type[CEM] = CEM

    def __init__(self, cfg: CEMConfig, mean: torch.Tensor, seeds: list[int], bounds: Bounds,
                 init_elites: torch.Tensor | None = None) -> None:
        super().__init__(cfg, mean, seeds, bounds)
        self.seeds = seeds
        self.switch = cfg.opt_steps - cfg.grad_iterations
        self.sampler: Solver = self.sampler_type(cfg, mean, seeds, bounds, init_elites)
        self.refiner: Gradient | None = None

    def _current(self, it: int) -> Solver:
        if it < self.switch:
            return self.sampler
        if self.refiner is None:
            b = len(self.seeds)
            plan, sigma = self.sampler.result(list(range(b)))
            self.refiner = Gradient(self.cfg, plan.clone(), self.seeds, self.bounds, spread=sigma.clone())
        return self.refiner

    def propose(self, idx: torch.Tensor, it: int) -> torch.Tensor:
        return self._current(it).propose(idx, it)

    def update(self, idx: torch.Tensor, it: int, candidates: torch.Tensor, costs: torch.Tensor) -> None:
        self._current(it).update(idx, it, candidates, costs)

    def step(self, idx: torch.Tensor, it: int, evaluate: Evaluator) -> torch.Tensor:
        return self._current(it).step(idx, it, evaluate)

    def result(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.sampler if self.refiner is None else self.refiner).result(ids)

    def kept(self, ids: list[int]) -> torch.Tensor | None:
        return self.sampler.kept(ids)


class CEMThenGradient(SampleThenGradient):
    sampler_type = CEM


class ICEMThenGradient(SampleThenGradient):
    sampler_type = ICEM
