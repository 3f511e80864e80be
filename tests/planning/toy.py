"""A world model whose optimal plan is known in closed form.

Latent dynamics are linear: z_{t+1} = z_t + M a_t, with M invertible. With
the "last" objective and horizon 1, the unique optimum is a* = M^-1 (g - z0).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from models import Latent


class LinearToyModel(nn.Module):
    def __init__(self, action_dim: int = 2, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.M = torch.eye(action_dim) + 0.3 * torch.randn(action_dim, action_dim, generator=g)
        self.config = SimpleNamespace(action_dim=action_dim, action_low=None, action_high=None)
        self.calls = 0

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def rollout_bytes_per_sample(self, horizon: int) -> int:
        return 64 * horizon

    def latent(self, z: torch.Tensor) -> Latent:
        """(N, D) state -> Latent with one patch of width D and no proprio."""
        return Latent(z[:, None, :], z.new_zeros(z.shape[0], 0))

    def rollout(self, z0: Latent, actions: torch.Tensor) -> Latent:
        self.calls += 1
        steps = torch.cumsum(actions @ self.M.T, dim=1)  # (B, H, D)
        z = z0.visual[:, 0, None, :] + steps
        return Latent(z[:, :, None, :], z.new_zeros(*z.shape[:2], 0))

    differentiable_rollout = rollout  # out of place already: the gradient solver can use it
