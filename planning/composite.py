"""Composite solvers: sample first, then refine the sampler's plan by gradient.

Sampling (CEM or iCEM) finds the basin; a few Adam steps through the model
then polish the plan, cheaper per iteration than another round of hundreds
of samples. The first `max_iterations - gradient_iterations` iterations
sample; the gradient phase starts from the sampler's plan (and, for
gradient.starts > 1, copies perturbed by the sampler's final sigma). The
sampler reads its own settings (``planner.cem`` or ``planner.icem``), the
refinement ``planner.gradient``. Early stopping may end a
plan during sampling, then it is never refined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from planning.cem import CEM
from planning.evaluate import Evaluator
from planning.gradient import Gradient
from planning.icem import ICEM
from planning.settings import Settings, setting
from planning.solver import Bounds, Solver

if TYPE_CHECKING:
    from planning.config import PlannerConfig


@dataclass(frozen=True)
class CEMGradientSettings(Settings):
    """``planner.cem_gradient``: how the iterations are split (the phases read ``cem`` and ``gradient``)."""

    section = "cem_gradient"
    gradient_iterations: int = setting(5, "the last iterations, spent on gradient steps (< max_iterations)",
                                       ge=1, limit="max_opt_steps", legacy="grad_iterations")


@dataclass(frozen=True)
class ICEMGradientSettings(CEMGradientSettings):
    """``planner.icem_gradient``: as ``cem_gradient``, with iCEM sampling (``planner.icem``)."""

    section = "icem_gradient"


class SampleThenGradient(Solver):
    """State: the sampler's, then the Gradient solver's (built at the switch, for all B)."""

    sampler_type: ClassVar[type[CEM]] = CEM
    fixed_schedule = True  # the gradient phase is the last gradient_iterations of max_iterations

    def __init__(self, config: PlannerConfig, mean: torch.Tensor, seeds: list[int], bounds: Bounds,
                 init_elites: torch.Tensor | None = None) -> None:
        super().__init__(config, mean, seeds, bounds)
        self.seeds = seeds
        self.switch = config.max_iterations - config.solver(self.name).gradient_iterations
        self.sampler: Solver = self.sampler_type(config, mean, seeds, bounds, init_elites)
        self.refiner: Gradient | None = None

    @classmethod
    def check(cls, config: PlannerConfig) -> None:
        n = config.solver(cls.name).gradient_iterations
        if n >= config.max_iterations:
            raise ValueError(f"{cls.name}.gradient_iterations={n} must be < max_iterations={config.max_iterations} "
                             f"for method={cls.name!r}: the first iterations sample")

    @classmethod
    def rollouts(cls, config: PlannerConfig, iterations: int) -> float:
        n = min(config.solver(cls.name).gradient_iterations, iterations)
        return cls.sampler_type.rollouts(config, iterations - n) + Gradient.rollouts(config, n)

    def _current(self, it: int) -> Solver:
        if it < self.switch:
            return self.sampler
        if self.refiner is None:
            b = len(self.seeds)
            plan, sigma = self.sampler.result(list(range(b)))
            self.refiner = Gradient(self.config, plan.clone(), self.seeds, self.bounds, spread=sigma.clone())
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
    name = "cem_gradient"
    settings_type = CEMGradientSettings
    uses = ("cem", "gradient")
    sampler_type = CEM
    cost_settings = ("cem.samples", "gradient.starts")


class ICEMThenGradient(SampleThenGradient):
    name = "icem_gradient"
    settings_type = ICEMGradientSettings
    uses = ("icem", "gradient")
    sampler_type = ICEM
    cost_settings = ("icem.samples", "gradient.starts")
