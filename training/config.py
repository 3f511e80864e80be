"""Training configuration, read from a JSON file.

    {
      "dataset": "data/wall",              # a dataset in envs/dataset.py's format
      "out": "runs/wall",                  # run folder: checkpoints, metrics.jsonl, model.pt
      "seed": 0,
      "val_fraction": 0.1,                 # episode-level split
      "model": {...},                      # WorldModelConfig fields
      "encoder": {...},                    # PhaseConfig for the autoencoder phase
      "predictor": {...},                  # PhaseConfig for the predictor phase
      "planning_eval": {...},              # PlanningEvalConfig: closed-loop success every N epochs (off by default)
      "init_from": null                    # an artifact to start from (a fine-tune): its weights and statistics
    }

Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import json
import math
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


SELECT_BEST = ("val_loss", "planning_success")


@dataclass(frozen=True)
class PlanningEvalConfig:
    """Closed-loop planning success on a fixed set of held-out tasks, measured
    every `every` epochs of a phase that yields a servable model (the
    predictor). The environment is the dataset's (meta.json `env`); see
    training/planning_eval.py for the tasks of each.

    Args:
    every: evaluate after every this many epochs; 0 = off (the default: it
        costs whole closed-loop episodes of planning).
    episodes: tasks evaluated each time (the same tasks every time).
    tasks: the task kind of the environment ("near" or "far" on the wall;
        "near" on PushT: DINO-WM's goal 5 model steps away).
    seed: seed of the tasks and of the plans; fixed, and not the dataset's
        collection seed, so that the tasks are held out.
    budget: model steps per episode; None = the task kind's default (wall
        near 10, far 40; PushT 10).
    execute: model steps executed between replans.
    planner: planner settings over the model's serving defaults
        (PlannerConfig.for_model: the device preset plus the config's `planner`);
        fewer samples or iterations make the check cheaper.
    max_seconds: bound on one evaluation: no further episode starts once this
        much time is spent (at least one episode always runs); the number of
        episodes that ran is logged beside the success.
    """

    every: int = 0
    episodes: int = 10
    tasks: str = "near"
    seed: int = 1000
    budget: int | None = None
    execute: int = 1
    planner: dict[str, Any] = field(default_factory=dict)
    max_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError(f"planning_eval.every={self.every}: must be >= 0 (0 = off)")
        for name in ("episodes", "execute"):
            if getattr(self, name) < 1:
                raise ValueError(f"planning_eval.{name}={getattr(self, name)}: must be >= 1")
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"planning_eval.budget={self.budget}: must be >= 1 model step, or null for the default")
        if not (isinstance(self.max_seconds, (int, float)) and self.max_seconds > 0 and math.isfinite(self.max_seconds)):
            raise ValueError(f"planning_eval.max_seconds={self.max_seconds!r}: must be a finite number of seconds > 0")
        from planning import PlannerConfig  # overrides are validated now, not after an hour of training

        try:  # over the CPU preset, where the trainer plans
            PlannerConfig.cpu_preset().updated(self.planner)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"planning_eval.planner={self.planner}: {exc}") from None

    @property
    def enabled(self) -> bool:
        return self.every > 0


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
    select_best: what makes an epoch the best one, kept in best.pt and
        copied to model.pt: "val_loss" (the lowest validation loss) or
        "planning_success" (the highest closed-loop success among the epochs
        `planning_eval` measured, ties broken by the lower validation loss;
        until the first measurement, the lowest validation loss). A low
        prediction loss does not guarantee good plans. Early stopping, the
        learning-rate schedule and divergence stay on the validation loss.
        Only a phase that yields a servable model can use "planning_success".
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
    select_best: str = "val_loss"

    def __post_init__(self) -> None:
        if self.select_best not in SELECT_BEST:
            raise ValueError(f"select_best={self.select_best!r}: expected one of {list(SELECT_BEST)}")
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
    # artifact's metadata and used as the server's defaults (PlannerConfig.for_model).
    planner: dict[str, Any] = field(default_factory=dict)
    planning_eval: PlanningEvalConfig = field(default_factory=PlanningEvalConfig)
    # A servable artifact to start from instead of random weights (a fine-tune, e.g. a self-improvement
    # round, training/self_improve.py): its weights and its action/proprio statistics (the action space
    # its embeddings learned) are kept; its `model` config must equal this one. With encoder.epochs 0 its
    # encoder is kept as it is and only the predictor trains.
    init_from: str | None = None
    # With init_from: load only the weights whose name and shape match this run's model, the others start
    # fresh (logged and listed in the artifact's metadata): e.g. a longer history (a new position embedding)
    # or more tokens per frame (the same conv weights pooled finer) on a trained encoder and predictor.
    init_partial: bool = False

    def __post_init__(self) -> None:
        if self.init_partial and not self.init_from:
            raise ValueError("init_partial=true needs init_from (an artifact to take the matching weights from)")
        for phase in ("encoder", "predictor"):
            if getattr(self, phase).select_best == "planning_success" and not self.planning_eval.enabled:
                raise ValueError(f"{phase}.select_best='planning_success' needs planning_eval.every > 0 "
                                 "(nothing measures planning success otherwise)")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(_strict(cls, data, "train config"))
        data["model"] = WorldModelConfig.from_dict(data.get("model", {}))
        from planning import PlannerConfig  # validate the recommendation now, not at serving time

        try:
            PlannerConfig().updated(data.get("planner", {}))
        except ValueError as exc:
            raise ValueError(f"planner: {exc}") from None
        for phase in ("encoder", "predictor"):
            data[phase] = PhaseConfig(**_strict(PhaseConfig, data.get(phase, {}), f"{phase} phase"))
        data["planning_eval"] = PlanningEvalConfig(**_strict(PlanningEvalConfig, data.get("planning_eval", {}),
                                                             "planning_eval"))
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
