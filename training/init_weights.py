"""Starting a run from a trained model (TrainConfig.init_from): a fine-tune, a self-improvement round
(training/self_improve.py), or a variant that keeps the weights that still fit (init_partial)."""

from __future__ import annotations

import logging
from typing import Any

import torch

from models import NormStats, WorldModel, WorldModelConfig
from models.artifact import read_artifact
from training.config import TrainConfig

log = logging.getLogger(__name__)
__all__ = ["load_init", "read_init"]


def read_init(cfg: TrainConfig) -> dict[str, Any]:
    """The weights and statistics of `cfg.init_from`, checked against `cfg.model`."""
    payload = read_artifact(cfg.init_from)
    if payload.get("family", "world_model") != "world_model":
        raise ValueError(f"init_from={cfg.init_from}: a {payload['family']!r} model; the trainer trains WorldModel")
    base = WorldModelConfig.from_dict(payload["config"])
    if base != cfg.model and not cfg.init_partial:
        ours = cfg.model.to_dict()
        diff = {k: (v, ours[k]) for k, v in base.to_dict().items() if ours.get(k) != v}
        raise ValueError(f"init_from={cfg.init_from}: its model config differs from the run's (artifact, run): {diff}; "
                         "init_partial=true loads only the weights that match")
    return {"state_dict": payload["state_dict"], "stats": NormStats.from_dict(payload["stats"])}


def load_init(model: WorldModel, weights: dict[str, torch.Tensor], cfg: TrainConfig) -> list[str]:
    """Load `weights` into `model` (all of them, or with init_partial those whose name and shape match);
    the names left at their fresh initialisation."""
    own = model.state_dict()
    matching = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    fresh = sorted(set(own) - set(matching))
    if not matching:
        raise ValueError(f"init_from={cfg.init_from}: no weight matches the run's model by name and shape")
    if cfg.encoder.epochs == 0 and any(k.startswith("encoder.") for k in fresh):
        raise ValueError(f"init_from={cfg.init_from}: encoder weights {[k for k in fresh if k.startswith('encoder.')]} "
                         "do not match and encoder.epochs is 0: the encoder would stay random")
    model.load_state_dict({**own, **matching})
    if fresh:
        log.warning("init_from %s: %d weights start fresh (no match by name and shape): %s", cfg.init_from,
                    len(fresh), fresh)
    return fresh
