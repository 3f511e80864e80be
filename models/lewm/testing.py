"""Small seeded LeWMs for tests and examples (not for serving real robots)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from models.artifact import save_model
from models.lewm.config import LeWMConfig
from models.lewm.model import LeWM
from models.stats import NormStats

# The published architecture's shape at a size a 2-core CPU plans with in milliseconds.
TINY_LEWM = LeWMConfig(name="tiny-lewm", image_size=28, patch_size=14, vit_dim=32, vit_depth=2, vit_heads=2,
                       vit_mlp_dim=64, embed_dim=16, projector_hidden=32, pred_proj_hidden=32, predictor_dim=16,
                       num_hist=3, depth=2, heads=2, dim_head=8, mlp_dim=32, raw_action_dim=2, frameskip=2)
# Planner settings that keep a test plan to a few tens of ms.
FAST_PLANNER = {"method": "cem", "horizon": 5, "objective": "last", "max_iterations": 4, "min_iterations": 2,
                "cem": {"samples": 24, "elites": 4}}


def tiny_lewm_stats(cfg: LeWMConfig = TINY_LEWM) -> NormStats:
    return NormStats(action_mean=torch.linspace(-0.5, 0.5, cfg.raw_action_dim),
                     action_std=torch.full((cfg.raw_action_dim,), 2.0), proprio_mean=torch.zeros(0),
                     proprio_std=torch.zeros(0),
                     provenance={"dataset": "synthetic", "split": "train", "num_episodes": 1, "num_frames": 1})


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter and BatchNorm running statistic drawn from a seeded generator: a fresh
    LeWM's AdaLN-zero blocks are the identity, which would hide a wrong predictor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            else:
                scale = 1.0 if t.dim() < 2 else t.shape[-1] ** -0.5
                t.copy_(scale * torch.randn(t.shape, generator=g))


def tiny_lewm(seed: int = 0, **overrides: Any) -> LeWM:
    cfg = replace(TINY_LEWM, **overrides)
    model = LeWM(cfg, tiny_lewm_stats(cfg))
    randomize(model, seed)
    return model.eval().requires_grad_(False)


def save_tiny_lewm(path: str | Path, seed: int = 0, planner: dict[str, Any] | None = None, **overrides: Any) -> Path:
    return save_model(tiny_lewm(seed, **overrides), path,
                      metadata={"kind": "tiny random LeWM", "planner": planner or FAST_PLANNER})
