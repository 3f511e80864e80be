"""Normalisation statistics and the one place that converts actions.

The model works in a normalised space: raw env actions and proprio are
standardised with the mean/std the model was *trained with*. Those
statistics travel inside the model artifact with their provenance; nothing
recomputes them at serving time (a server that recomputed them over the full
dataset instead of the train split planned in a shifted action space).

The provenance says how they were computed (`SPLITS`): over the training
split (this project's trainer), by another trainer's recorded rule over
every episode it loaded (DINO-WM's wall and point-maze loaders compute them
before their train/val split), or as constants published with the dataset
(DINO-WM's PushT). Anything else is of unknown origin and refused.

`ActionCodec` is the single conversion between
  env actions  (..., H*frameskip, raw_action_dim)  in env units, and
  model actions (..., H, frameskip*raw_action_dim) normalised,
grouping `frameskip` consecutive env steps into one model step as DINO-WM does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# A constant action or proprio dimension has std 0; dividing by it would give
# inf. Such a dimension carries no information, so a floor is harmless.
STD_FLOOR = 1e-6

# provenance["split"] -> what it means, and the keys that must then pin it down.
SPLITS: dict[str, tuple[str, tuple[str, ...]]] = {
    "train": ("computed over the training split only", ()),
    "all_loaded": ("computed by the model's trainer over every episode it loaded, before its train/val split "
                   "(DINO-WM's wall and point-maze loaders)", ("rule", "num_episodes")),
    "published": ("constants published with the dataset, as the trainer used them (DINO-WM's PushT)",
                  ("source",)),
}


def check_provenance(provenance: dict[str, Any]) -> None:
    """Raise ValueError unless `provenance` says where the statistics come from (see SPLITS)."""
    for key in ("dataset", "split"):
        if key not in provenance:
            raise ValueError(f"statistics provenance needs {key!r}; got {provenance}")
    split = provenance["split"]
    if split not in SPLITS:
        raise ValueError(
            f"statistics of unknown origin (split={split!r}): a model must carry the statistics it was trained with, "
            f"computed over the training split ('train'), by its trainer's recorded rule over all loaded episodes "
            f"('all_loaded', with 'rule' and 'num_episodes') or as the dataset's published constants ('published', "
            f"with 'source'); never relabel other numbers")
    missing = [k for k in SPLITS[split][1] if provenance.get(k) in (None, "")]
    if missing:
        raise ValueError(f"statistics provenance with split={split!r} needs {missing}; got {provenance}")


@dataclass
class NormStats:
    """Args:
    action_mean, action_std: (raw_action_dim,) per raw env action dimension.
    proprio_mean, proprio_std: (proprio_dim,), empty when there is no proprio.
    provenance: how they were computed: at least `dataset` and `split`
        ("train", "all_loaded" with `rule` and `num_episodes`, or
        "published" with `source`; see SPLITS), plus counts.
    """

    action_mean: torch.Tensor
    action_std: torch.Tensor
    proprio_mean: torch.Tensor
    proprio_std: torch.Tensor
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("action_mean", "action_std", "proprio_mean", "proprio_std"):
            t = torch.as_tensor(getattr(self, name), dtype=torch.float32).flatten()
            if not torch.isfinite(t).all():
                raise ValueError(f"statistics {name} contain NaN or Inf: {t.tolist()}")
            setattr(self, name, t)
        if self.action_mean.shape != self.action_std.shape:
            raise ValueError(f"action_mean {tuple(self.action_mean.shape)} and action_std "
                             f"{tuple(self.action_std.shape)} differ in shape")
        if self.proprio_mean.shape != self.proprio_std.shape:
            raise ValueError(f"proprio_mean {tuple(self.proprio_mean.shape)} and proprio_std "
                             f"{tuple(self.proprio_std.shape)} differ in shape")
        if (self.action_std < 0).any() or (self.proprio_std < 0).any():
            raise ValueError("standard deviations must be >= 0")
        self.action_std = self.action_std.clamp_min(STD_FLOOR)
        self.proprio_std = self.proprio_std.clamp_min(STD_FLOOR)
        check_provenance(self.provenance)

    def to_dict(self) -> dict[str, Any]:
        return {"action_mean": self.action_mean, "action_std": self.action_std,
                "proprio_mean": self.proprio_mean, "proprio_std": self.proprio_std,
                "provenance": dict(self.provenance)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NormStats":
        return cls(**data)

    def to(self, device: torch.device | str) -> "NormStats":
        return NormStats(self.action_mean.to(device), self.action_std.to(device),
                         self.proprio_mean.to(device), self.proprio_std.to(device), self.provenance)


class ActionCodec:
    """Env actions <-> normalised model actions, and proprio normalisation."""

    def __init__(self, stats: NormStats, frameskip: int) -> None:
        self.stats = stats
        self.frameskip = frameskip
        self.raw_dim = stats.action_mean.numel()

    def to_model(self, env_actions: torch.Tensor) -> torch.Tensor:
        """(..., H*frameskip, raw) env units -> (..., H, frameskip*raw) normalised."""
        *lead, steps, raw = env_actions.shape
        if raw != self.raw_dim or steps % self.frameskip:
            raise ValueError(f"env actions of shape {tuple(env_actions.shape)}: need (..., k*{self.frameskip}, "
                             f"{self.raw_dim})")
        s = self.stats
        norm = (env_actions - s.action_mean.to(env_actions)) / s.action_std.to(env_actions)
        return norm.reshape(*lead, steps // self.frameskip, self.frameskip * raw)

    def to_env(self, model_actions: torch.Tensor) -> torch.Tensor:
        """(..., H, frameskip*raw) normalised -> (..., H*frameskip, raw) env units."""
        *lead, steps, dim = model_actions.shape
        if dim != self.frameskip * self.raw_dim:
            raise ValueError(f"model actions of shape {tuple(model_actions.shape)}: need last dim "
                             f"{self.frameskip * self.raw_dim}")
        raw = model_actions.reshape(*lead, steps * self.frameskip, self.raw_dim)
        s = self.stats
        return raw * s.action_std.to(raw) + s.action_mean.to(raw)

    def normalize_proprio(self, proprio: torch.Tensor) -> torch.Tensor:
        s = self.stats
        return (proprio - s.proprio_mean.to(proprio)) / s.proprio_std.to(proprio)

    def model_bounds(self, low: tuple[float, ...], high: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw action bounds -> (action_dim,) bounds in normalised model space."""
        lo = torch.tensor(low, dtype=torch.float32).expand(self.frameskip, self.raw_dim)
        hi = torch.tensor(high, dtype=torch.float32).expand(self.frameskip, self.raw_dim)
        return self.to_model(lo).flatten(), self.to_model(hi).flatten()


def read_stats_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a statistics file an importer reads: JSON, NPZ (a `provenance` entry, if any, is a
    JSON string) or a weights-only torch file (`.pt`/`.pth`). Raises ValueError naming the file; what the
    mapping must hold is the importer's business (each model family needs other statistics)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no statistics file at {path}")
    if path.suffix == ".json":
        data = json.loads(path.read_text())
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
        if "provenance" in data:
            data["provenance"] = json.loads(str(data["provenance"]))
    elif path.suffix in (".pt", ".pth"):
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means "not a weights-only dict"
            raise ValueError(f"{path} could not be read as a weights-only torch file: {exc}") from exc
    else:
        raise ValueError(f"{path}: statistics must be a .json, .npz or .pt/.pth file")
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of statistics and 'provenance', not {type(data).__name__}")
    return data
