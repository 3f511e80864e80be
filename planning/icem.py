"""iCEM (Pinneri et al., 2020, "Sample-efficient Cross-Entropy Method for
Real-time Planning"): CEM with the paper's sample-saving changes.

- Colored noise: samples are correlated along the horizon with a power
  spectrum ~ 1/f**beta (`beta`; 0 is CEM's white noise), so fewer
  samples cover the smooth action sequences that move a system far.
- Kept elites: a fraction (`keep_elites`) of the last iteration's
  elites is re-scored among the next iteration's samples, and a plan's kept
  elites, shifted by the executed steps, seed the next MPC plan
  (`PlanResult.elites`, `PlanBatch(init_elites=...)`).
- Shrinking population: iteration i draws samples / decay**i
  samples (never fewer than 2 * elites).
- Best so far: the returned plan is the lowest-cost sequence ever scored,
  not the last mean (the mean itself is sample 0 of every iteration).

Not ported: the paper's momentum on mu and sigma (0.1) and adding the mean in
the last iteration only (it is sample 0 of every iteration here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from planning.cem import CEM, CEMSettings
from planning.settings import setting
from planning.solver import Bounds, draw_normal

if TYPE_CHECKING:
    from planning.config import PlannerConfig


@dataclass(frozen=True)
class ICEMSettings(CEMSettings):
    """iCEM's settings (``planner.icem``): CEM's, and the paper's sample-saving changes."""

    section = "icem"
    beta: float = setting(2.0, "colored-noise exponent along the horizon (0 = white as CEM; 2 = the paper's "
                          "choice: smoother, lower-frequency sequences)", ge=0, limit=10.0, legacy="icem_beta")
    keep_elites: float = setting(0.3, "fraction of the elites carried into the next iteration (and, shifted, "
                                 "into the next MPC plan)", ge=0, le=1, legacy="icem_keep_elites")
    decay: float = setting(1.25, "the population shrinks by this factor per iteration (never below 2 * elites)",
                           ge=1, limit=100.0, legacy="icem_decay")


def population(s: ICEMSettings, it: int) -> int:
    """Samples (mean and kept elites included) of iteration `it`."""
    return max(int(s.samples / s.decay ** it), min(2 * s.elites, s.samples), kept_elites(s) + 2)


def kept_elites(s: ICEMSettings) -> int:
    return int(round(s.keep_elites * s.elites))


def colored(white: torch.Tensor, beta: float) -> torch.Tensor:
    """(..., T) white standard normal -> noise with power ~ 1/f**beta along the last
    axis, each series rescaled to unit variance over its T steps (the
    `colorednoise` recipe, on torch)."""
    t = white.shape[-1]
    if beta == 0 or t < 2:
        return white
    f = torch.fft.rfftfreq(t, device=white.device)
    f[0] = f[1]  # the mean gets the lowest frequency's weight, not infinity
    spec = torch.fft.rfft(white, dim=-1) * f.pow(-beta / 2)
    out = torch.fft.irfft(spec, n=t, dim=-1)
    return out / out.std(dim=-1, keepdim=True).clamp_min(1e-12)


class ICEM(CEM):
    """State: mu, sigma (B, H, A); elites (B, e, H, A) kept; best (B, H, A), best_cost (B,);
    noise per iteration (B, N_i - 1 - e, H, A)."""

    name = "icem"
    settings_type = ICEMSettings

    def __init__(self, config: PlannerConfig, mean: torch.Tensor, seeds: list[int], bounds: Bounds,
                 init_elites: torch.Tensor | None = None) -> None:
        b, h, a = mean.shape
        self.config, self.bounds = config, bounds
        self.s = s = config.solver(self.name)
        self.mu = mean
        self.sigma = torch.full((b, h, a), s.sigma, device=mean.device)
        e = kept_elites(s)
        sizes = [population(s, i) - 1 - e for i in range(config.max_iterations)]
        white = draw_normal(seeds, (sum(sizes) + e, a, h), mean.device)  # colored along H, per action dim
        noise = colored(white, s.beta).transpose(-1, -2)  # (B, total, H, A)
        self.elites = self.clip(mean[:, None] + s.sigma * noise[:, :e])  # stand-ins until elites exist
        if init_elites is not None:  # the last plan's elites, shifted (MPC)
            n = min(e, init_elites.shape[1])
            self.elites[:, :n] = self.clip(init_elites[:, :n].to(mean))
        self.noise = list(noise[:, e:].split(sizes, dim=1))
        self.best = mean.clone()
        self.best_cost = torch.full((b,), float("inf"), device=mean.device)

    @classmethod
    def rollouts(cls, config: PlannerConfig, iterations: int) -> float:
        return float(sum(population(config.solver(cls.name), it) for it in range(iterations)))

    def propose(self, idx: torch.Tensor, it: int) -> torch.Tensor:
        drawn = self.mu[idx, None] + self.sigma[idx, None] * self.noise[it][idx]
        return torch.cat([self.mu[idx, None], self.elites[idx], drawn], dim=1)  # (b, N_i, H, A)

    def update(self, idx: torch.Tensor, it: int, candidates: torch.Tensor, costs: torch.Tensor) -> None:
        h, a = candidates.shape[-2:]
        k = min(self.s.elites, candidates.shape[1])
        top = costs.topk(k, dim=1, largest=False, sorted=True)
        elites = candidates.gather(1, top.indices[..., None, None].expand(-1, -1, h, a))  # (b, k, H, A)
        self.mu[idx] = elites.mean(dim=1)
        self.sigma[idx] = self.refit_std(elites)
        self.elites[idx] = elites[:, :self.elites.shape[1]]
        better = top.values[:, 0] < self.best_cost[idx]  # (b,)
        self.best[idx] = torch.where(better[:, None, None], elites[:, 0], self.best[idx])
        self.best_cost[idx] = torch.minimum(top.values[:, 0], self.best_cost[idx])

    def result(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.best[ids], self.sigma[ids]

    def kept(self, ids: list[int]) -> torch.Tensor:
        """The kept elites (n, e, H, A) of requests `ids`, for the next MPC plan."""
        return self.elites[ids]
