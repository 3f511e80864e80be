"""What a plan returns: the action sequence, its own loss, and how planning went."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

StopReason = Literal["converged", "max_iterations", "deadline", "cancelled"]


@dataclass
class PlanResult:
    """One request's plan. actions/sigma: (H, action_dim) normalised model space."""

    actions: torch.Tensor
    sigma: torch.Tensor  # the solver's spread around `actions` (0 for a solver without one)
    loss: float  # objective of `actions` itself
    loss_trace: list[float] = field(default_factory=list)  # best candidate loss per iteration
    iterations: int = 0
    stop_reason: str = "max_iterations"  # a StopReason
    seed: int = 0
    method: str = "cem"  # the solver that made the plan
    rollouts: int = 0  # sequences scored by a forward rollout, the final scoring included
    grad_rollouts: int = 0  # sequences scored with a backward pass (gradient solvers)
    elites: torch.Tensor | None = None  # (e, H, A) iCEM's kept elites, to warm-start the next plan
