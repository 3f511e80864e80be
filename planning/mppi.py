"""MPPI: CEM's sampling with a soft, cost-weighted refit instead of hard elites.

Every sample contributes with weight softmax(-z / temperature), z its cost
standardised over the iteration's samples of its request (so one temperature
suits any model's loss scale; Williams et al. 2017 use raw costs and a
per-task lambda). The new mean is the weighted mean; sigma is the weighted
std floored at `min_sigma`, as TD-MPC2's MPPI refits it (classic MPPI keeps sigma
fixed, which wastes a 30-iteration budget exploring at the initial spread).
It has no elites.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from planning.cem import CEM
from planning.settings import Settings, setting


@dataclass(frozen=True)
class MPPISettings(Settings):
    """MPPI's settings (``planner.mppi``)."""

    section = "mppi"
    samples: int = setting(300, "action sequences drawn per iteration, per request; sample 0 is the mean",
                           ge=1, limit="max_num_samples", legacy="num_samples")
    sigma: float = setting(1.0, "initial standard deviation in normalised action space", gt=0,
                           limit="max_var_scale", legacy="var_scale")
    min_sigma: float = setting(0.05, "floor on the refit sigma", ge=0, limit="max_var_scale", legacy="min_std")
    temperature: float = setting(0.5, "weights exp(-z / temperature), z the cost standardised over the "
                                 "iteration's samples (scale-free)", gt=0, limit=1e4, legacy="mppi_temperature")


class MPPI(CEM):
    """State and proposals as CEM (mu, sigma, noise drawn up front)."""

    name = "mppi"
    settings_type = MPPISettings

    def update(self, idx: torch.Tensor, it: int, candidates: torch.Tensor, costs: torch.Tensor) -> None:
        z = (costs - costs.min(dim=1, keepdim=True).values) / costs.std(dim=1, keepdim=True).clamp_min(1e-12)
        w = torch.softmax(-z / self.s.temperature, dim=1)[..., None, None]  # (b, S, 1, 1)
        mu = (w * candidates).sum(dim=1)  # (b, H, A)
        var = (w * (candidates - mu[:, None]).square()).sum(dim=1)
        self.mu[idx] = mu
        self.sigma[idx] = var.sqrt().clamp_min(self.s.min_sigma)
