"""Small random models for tests and examples (not for serving real robots)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from models.artifact import save_model
from models.config import WorldModelConfig
from models.stats import NormStats
from models.world_model import WorldModel

TINY_CONFIG = WorldModelConfig(
    name="tiny-random", image_size=32, encoder="conv", encoder_dim=16, conv_channels=(8, 16), token_grid=2,
    raw_action_dim=2, frameskip=2, proprio_dim=2, action_emb_dim=4, proprio_emb_dim=4, num_hist=3,
    depth=2, heads=2, dim_head=8, mlp_dim=32)


def tiny_stats(cfg: WorldModelConfig = TINY_CONFIG) -> NormStats:
    return NormStats(
        action_mean=torch.linspace(-0.5, 0.5, cfg.raw_action_dim), action_std=torch.full((cfg.raw_action_dim,), 2.0),
        proprio_mean=torch.full((cfg.proprio_dim,), 10.0), proprio_std=torch.full((cfg.proprio_dim,), 5.0),
        provenance={"dataset": "synthetic", "split": "train", "num_episodes": 1, "num_frames": 1})


def random_model(cfg: WorldModelConfig, stats: NormStats, seed: int = 0) -> WorldModel:
    """An eval-mode model with seeded random weights."""
    torch.manual_seed(seed)
    return WorldModel(cfg, stats).eval().requires_grad_(False)


def tiny_model(seed: int = 0, **overrides: Any) -> WorldModel:
    """A random eval-mode model, small enough to plan with in milliseconds on a CPU."""
    cfg = replace(TINY_CONFIG, **overrides)
    return random_model(cfg, tiny_stats(cfg), seed)


def save_tiny_model(path: str | Path, seed: int = 0, **overrides: Any) -> Path:
    return save_model(tiny_model(seed, **overrides), path, metadata={"kind": "tiny random test model"})
