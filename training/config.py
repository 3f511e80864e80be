"""Training configuration, read from a JSON file.

    {
      "dataset": "data/wall",              # a dataset in envs/dataset.py's format
      "out": "runs/wall",                  # run folder: checkpoints, metrics.jsonl, model.pt
      "seed": 0,
      "val_fraction": 0.1,                 # episode-level split
      "model": {...},                      # WorldModelConfig fields
      "encoder": {...},                    # PhaseConfig for the autoencoder phase
      "predictor": {...}                   # PhaseConfig for the predictor phase
    }

Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from models import WorldModelConfig


def _strict(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    return data


@dataclass(frozen=True)
class PhaseConfig:
    """Args:
    epochs: maximum epochs of this phase.
    steps_per_epoch: optimiser steps per epoch (an epoch is a fixed budget of
        random batches, so epochs have the same cost whatever the dataset size).
    batch_size, lr, weight_decay: AdamW.
    warmup_steps: linear learning-rate warm-up at the start of the phase.
    grad_clip: max global gradient norm (0 = off).
    patience: early stopping after this many epochs without a validation
        improvement of at least `min_delta` (relative).
    lr_patience, lr_factor, min_lr: ReduceLROnPlateau on the validation loss.
    divergence_factor: stop when validation loss exceeds this multiple of the
        best so far (a diverging run), keeping the best checkpoint.
    val_batches: validation batches per epoch (fixed, seeded).
    snapshot_every: every this many epochs, keep the phase's model as it is
        then in `snapshots/<phase>-<epoch>.pt` (servable artifacts, for
        evaluating how planning success tracked the losses); 0 = off. Only
        the predictor phase yields a servable model.
    """

    epochs: int = 10
    steps_per_epoch: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    grad_clip: float = 1.0
    patience: int = 5
    min_delta: float = 1e-3
    lr_patience: int = 2
    lr_factor: float = 0.5
    min_lr: float = 1e-5
    divergence_factor: float = 10.0
    val_batches: int = 8
    snapshot_every: int = 0

    def __post_init__(self) -> None:
        for name in ("steps_per_epoch", "batch_size", "patience", "val_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.snapshot_every < 0:
            raise ValueError(f"snapshot_every={self.snapshot_every}: must be >= 0 (0 = off)")
        if self.epochs < 0:
            raise ValueError(f"epochs={self.epochs}: must be >= 0")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr}: must be > 0")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor={self.lr_factor}: must be in (0, 1)")
        if not self.divergence_factor > 1:
            raise ValueError(f"divergence_factor={self.divergence_factor}: must be > 1")


@dataclass(frozen=True)
class TrainConfig:
    dataset: str
    out: str
    seed: int = 0
    val_fraction: float = 0.1
    alpha: float = 1.0  # weight of the proprio prediction loss
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    encoder: PhaseConfig = field(default_factory=PhaseConfig)
    predictor: PhaseConfig = field(default_factory=PhaseConfig)
    # CEM settings recommended for planning with this model, stored in the
    # artifact's metadata and used as the server's defaults (CEMConfig.for_model).
    planner: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(_strict(cls, data, "train config"))
        data["model"] = WorldModelConfig.from_dict(data.get("model", {}))
        from planning import CEMConfig  # validate the recommendation now, not at serving time

        try:
            CEMConfig(**data.get("planner", {}))
        except TypeError as exc:
            raise ValueError(f"planner: {exc}") from None
        for phase in ("encoder", "predictor"):
            data[phase] = PhaseConfig(**_strict(PhaseConfig, data.get(phase, {}), f"{phase} phase"))
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
