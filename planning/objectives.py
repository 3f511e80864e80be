"""Planning objectives in latent space (DINO-WM's `create_objective_fn`).

loss = MSE(visual) + alpha * MSE(proprio), on
  "last": the final predicted frame only;
  "all":  every predicted frame, frame t weighted by base**t (normalised to
          sum to 1 so both modes live on the same scale).
"""

from __future__ import annotations

import torch

from models import Latent


def objective(pred: Latent, goal: Latent, mode: str, alpha: float, base: float = 2.0) -> torch.Tensor:
    """pred: Latent (N, H, P, Dv), (N, H, Ep); goal: Latent (N, P, Dv), (N, Ep) -> (N,)."""
    if mode == "last":
        vis = (pred.visual[:, -1] - goal.visual).square().mean(dim=(-2, -1))  # (N,)
        pro = (pred.proprio[:, -1] - goal.proprio).square().mean(dim=-1) if goal.proprio.shape[-1] else 0.0
        return vis + alpha * pro
    h = pred.visual.shape[1]
    w = base ** torch.arange(h, device=pred.visual.device, dtype=pred.visual.dtype)
    w = w / w.sum()  # (H,)
    vis = (pred.visual - goal.visual.unsqueeze(1)).square().mean(dim=(-2, -1))  # (N, H)
    loss = vis
    if goal.proprio.shape[-1]:
        loss = loss + alpha * (pred.proprio - goal.proprio.unsqueeze(1)).square().mean(dim=-1)
    return loss @ w
