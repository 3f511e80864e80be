"""CEM (the cross-entropy method) as DINO-WM plans with it.

Every iteration draws `a = mu + sigma * eps` for all S samples of all active
requests (sample 0 is mu itself), and refits mu and sigma to the top-k
lowest-cost samples. eps for every (request, iteration, sample) is drawn up
front from the request's own generator, before any chunking, so a seed gives
the same plan whatever the chunk size and whatever other requests share the
batch.

sigma is refit with the biased std (divide by k) and floored at `min_sigma`, as
TD-MPC2 does, so a collapsed elite set (e.g. topk=1) keeps exploring; DINO-WM
uses the unbiased std without a floor (see docs/planning.md for the measured
difference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from planning.settings import Settings, setting
from planning.solver import Bounds, Solver, draw_normal

if TYPE_CHECKING:
    from planning.config import PlannerConfig


@dataclass(frozen=True)
class CEMSettings(Settings):
    """CEM's settings (``planner.cem``); defaults are DINO-WM's paper settings."""

    section = "cem"
    samples: int = setting(300, "action sequences drawn per iteration, per request; sample 0 is the mean",
                           ge=1, limit="max_num_samples", legacy="num_samples")
    elites: int = setting(30, "lowest-cost samples that refit the mean and sigma (1..samples)",
                          ge=1, limit="max_num_samples", legacy="topk")
    sigma: float = setting(1.0, "initial standard deviation in normalised action space (1 = the training "
                           "data's std)", gt=0, limit="max_var_scale", legacy="var_scale")
    min_sigma: float = setting(0.05, "floor on sigma, so a collapsed elite set keeps exploring (TD-MPC2 clamps "
                               "the same way)", ge=0, limit="max_var_scale",
                               legacy="min_std")
    elite_std: str = setting("biased", "sigma refit: 'biased' (divide by k, TD-MPC2) or 'unbiased' (k - 1, "
                             "DINO-WM)", choices=("biased", "unbiased"), legacy="elite_std")

    def check(self) -> None:
        if self.elites > self.samples:
            raise ValueError(f"{self.path('elites')}={self.elites} exceeds {self.path('samples')}={self.samples}: "
                             "the elites are chosen among the samples")


class CEM(Solver):
    """State: mu, sigma (B, H, A); noise (B, max_iterations, S, H, A) drawn at init."""

    name = "cem"
    settings_type = CEMSettings
    cost_settings = ("samples",)

    def __init__(self, config: PlannerConfig, mean: torch.Tensor, seeds: list[int], bounds: Bounds,
                 init_elites: torch.Tensor | None = None) -> None:
        super().__init__(config, mean, seeds, bounds)
        self.s = config.solver(self.name)
        b, h, a = mean.shape
        self.mu = mean
        self.sigma = torch.full((b, h, a), self.s.sigma, device=mean.device)
        self.noise = draw_normal(seeds, (config.max_iterations, self.s.samples, h, a), mean.device)
        self.noise[:, :, 0] = 0.0  # sample 0 is mu itself

    @classmethod
    def rollouts(cls, config: PlannerConfig, iterations: int) -> float:
        return float(config.solver(cls.name).samples * iterations)

    def propose(self, idx: torch.Tensor, it: int) -> torch.Tensor:
        return self.mu[idx, None] + self.sigma[idx, None] * self.noise[idx, it]  # (b, S, H, A)

    def update(self, idx: torch.Tensor, it: int, candidates: torch.Tensor, costs: torch.Tensor) -> None:
        h, a = candidates.shape[-2:]
        top = costs.topk(self.s.elites, dim=1, largest=False, sorted=True)
        elites = candidates.gather(1, top.indices[..., None, None].expand(-1, -1, h, a))  # (b, k, H, A)
        self.mu[idx] = elites.mean(dim=1)
        self.sigma[idx] = self.refit_std(elites)

    def refit_std(self, elites: torch.Tensor) -> torch.Tensor:
        """(b, k, H, A) -> (b, H, A): the elites' std, floored at min_sigma."""
        unbiased = self.s.elite_std == "unbiased" and elites.shape[1] > 1
        return elites.std(dim=1, unbiased=unbiased).clamp_min(self.s.min_sigma)

    def result(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu[ids], self.sigma[ids]
