"""The trainer's resumable state: what `latest.pt` holds besides weights and optimisers.

Its own module so that the phases (training/phases.py), which read and update
it, and the loop (training/trainer.py), which owns it, both import it and
neither imports the other back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class State:
    """Everything `latest.pt` needs for an exact resume (plain types only); the counters are the current phase's."""

    phase: str  # a phase's name (the first of `training.phases.PHASES` for a fresh run), or "done"
    epoch: int = 0  # completed epochs of this phase
    epoch_step: int = 0  # completed steps of the current epoch
    global_step: int = 0  # steps of this phase, for warm-up
    epoch_sums: dict[str, float] = field(default_factory=dict)
    best_val: float = math.inf  # lowest validation loss (early stopping, divergence)
    best_epoch: int = 0  # epoch kept in best.pt (0: none yet); of best_val unless select_best says otherwise
    best_epoch_val: float = math.inf  # validation loss of best_epoch
    best_success: float | None = None  # planning success of best_epoch (None: not measured)
    bad_epochs: int = 0
    status: str = "running"  # running | early_stopped | max_epochs | diverged | interrupted | done
    history: list[dict[str, Any]] = field(default_factory=list)
