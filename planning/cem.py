"""CEM (the cross-entropy method) as DINO-WM plans with it.

Every iteration draws `a = mu + sigma * eps` for all S samples of all active
requests (sample 0 is mu itself), and refits mu and sigma to the top-k
lowest-cost samples. eps for every (request, iteration, sample) is drawn up
front from the request's own generator, before any chunking, so a seed gives
the same plan whatever the chunk size and whatever other requests share the
batch.

sigma is refit with the biased std (divide by k) and floored at `min_std`, as
TD-MPC2 does, so a collapsed elite set (e.g. topk=1) keeps exploring; DINO-WM
uses the unbiased std without a floor (see docs/planning.md for the measured
difference).
"""

from __future__ import annotations

import torch

from planning.config import CEMConfig
from planning.solver import Bounds, Solver, draw_normal


class CEM(Solver):
    """State: mu, sigma (B, H, A); noise (B, opt_steps, S, H, A) drawn at init."""

    def __init__(self, cfg: CEMConfig, mean: torch.Tensor, seeds: list[int], bounds: Bounds,
                 init_elites: torch.Tensor | None = None) -> None:
        super().__init__(cfg, mean, seeds, bounds)
        b, h, a = mean.shape
        self.mu = mean
        self.sigma = torch.full((b, h, a), cfg.var_scale, device=mean.device)
        self.noise = draw_normal(seeds, (cfg.opt_steps, cfg.num_samples, h, a), mean.device)
        self.noise[:, :, 0] = 0.0  # sample 0 is mu itself

    def propose(self, idx: torch.Tensor, it: int) -> torch.Tensor:
        return self.mu[idx, None] + self.sigma[idx, None] * self.noise[idx, it]  # (b, S, H, A)

    def update(self, idx: torch.Tensor, it: int, candidates: torch.Tensor, costs: torch.Tensor) -> None:
        h, a = candidates.shape[-2:]
        top = costs.topk(self.cfg.topk, dim=1, largest=False, sorted=True)
        elites = candidates.gather(1, top.indices[..., None, None].expand(-1, -1, h, a))  # (b, k, H, A)
        self.mu[idx] = elites.mean(dim=1)
        self.sigma[idx] = self.refit_std(elites)

    def refit_std(self, elites: torch.Tensor) -> torch.Tensor:
        """(b, k, H, A) -> (b, H, A): the elites' std, floored at min_std."""
        unbiased = self.cfg.elite_std == "unbiased" and elites.shape[1] > 1
        return elites.std(dim=1, unbiased=unbiased).clamp_min(self.cfg.min_std)

    def result(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu[ids], self.sigma[ids]
