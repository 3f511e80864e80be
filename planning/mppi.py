"""MPPI: CEM's sampling with a soft, cost-weighted refit instead of hard elites.

Every sample contributes with weight softmax(-z / temperature), z its cost
standardised over the iteration's samples of its request (so one temperature
suits any model's loss scale; Williams et al. 2017 use raw costs and a
per-task lambda). The new mean is the weighted mean; sigma is the weighted
std floored at `min_std`, as TD-MPC2's MPPI refits it (classic MPPI keeps sigma
fixed, which wastes a 30-iteration budget exploring at the initial spread).
`topk` is unused.
"""

from __future__ import annotations

import torch

from planning.cem import CEM


class MPPI(CEM):
    """State and proposals as CEM (mu, sigma, noise drawn up front)."""

    def update(self, idx: torch.Tensor, it: int, candidates: torch.Tensor, costs: torch.Tensor) -> None:
        z = (costs - costs.min(dim=1, keepdim=True).values) / costs.std(dim=1, keepdim=True).clamp_min(1e-12)
        w = torch.softmax(-z / self.cfg.mppi_temperature, dim=1)[..., None, None]  # (b, S, 1, 1)
        mu = (w * candidates).sum(dim=1)  # (b, H, A)
        var = (w * (candidates - mu[:, None]).square()).sum(dim=1)
        self.mu[idx] = mu
        self.sigma[idx] = var.sqrt().clamp_min(self.cfg.min_std)
