"""Model-predictive control: warm starts and the per-session state a server holds.

After the client executes k model steps of a plan, the next plan starts from
the old one shifted by k, its tail filled by repeating the last planned
action. Never zeros: zero in normalised space is "the mean training action",
which would bias the tail towards it. Sigma is reset by the planner (every
`plan` call starts at `var_scale`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models import Latent
from planning.result import PlanResult
from planning.config import CEMConfig


def warm_start(prev: torch.Tensor, executed: int, horizon: int | None = None) -> torch.Tensor:
    """prev: (..., H, A) previous plan; executed: model steps done since (>= 0).

    Returns (..., horizon, A): prev[executed:] followed by copies of prev's
    last action (also when executed >= H: then every step is that action).
    """
    if executed < 0:
        raise ValueError(f"executed={executed}: must be >= 0")
    h = prev.shape[-2]
    horizon = h if horizon is None else horizon
    kept = prev[..., min(executed, h):, :][..., :horizon, :]
    missing = horizon - kept.shape[-2]
    tail = prev[..., -1:, :].expand(*prev.shape[:-2], missing, prev.shape[-1])
    return torch.cat([kept, tail], dim=-2)


@dataclass
class MPCSession:
    """What a server keeps per client session between plan and replan.

    goal: Latent (1, ...) of the goal, encoded once per goal.
    config: the planner config this session was started with.
    plan: the last plan (H, A) normalised, None when cold.
    """

    goal: Latent
    config: CEMConfig
    plan: torch.Tensor | None = None
    steps_planned: int = 0  # plans made since the last cold start
    elites: torch.Tensor | None = None  # (e, H, A) the last plan's kept elites (iCEM), else None

    def init_mean(self, executed_steps: int) -> torch.Tensor | None:
        """Warm start for the next plan, (1, H, A), or None when cold."""
        if self.plan is None:
            return None
        return warm_start(self.plan, executed_steps, self.config.horizon).unsqueeze(0)

    def init_elites(self, executed_steps: int) -> torch.Tensor | None:
        """The last plan's kept elites shifted like the plan, (1, e, H, A), or None."""
        if self.plan is None or self.elites is None:
            return None
        return warm_start(self.elites, executed_steps, self.config.horizon).unsqueeze(0)

    def record(self, result: PlanResult) -> None:
        self.plan = result.actions.detach()
        self.elites = None if result.elites is None else result.elites.detach()
        self.steps_planned += 1

    def reset(self, goal: Latent | None = None, config: CEMConfig | None = None) -> None:
        """Cold start: forget the plan; optionally a new goal or config."""
        self.plan = None
        self.elites = None
        self.steps_planned = 0
        if goal is not None:
            self.goal = goal
        if config is not None:
            self.config = config
