"""What the diagnosis checks share: thresholds, the finding record, one
phase's monitored curve, and JSON-safe numbers (training/diagnose.py and
training/diagnose_losses.py use them; the monitor reads Finding and Thresholds).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

KINDS = ("non_finite", "instability", "divergence", "overfitting", "plateau", "slow_convergence",
         "regularisation_dominated", "train_val_gap")
SEVERITY = {"non_finite": "error", "divergence": "error", "instability": "warning", "overfitting": "warning",
            "plateau": "warning", "slow_convergence": "info", "regularisation_dominated": "info",
            "train_val_gap": "info"}
# What a "restart from the best checkpoint" recommendation runs (training/__main__.py).
RESUME_BEST = "python -m training --config CONFIG --resume best --lr {lr:.2g}"


@dataclass(frozen=True)
class Thresholds:
    """Args:
    rising_fraction: share of the epoch-to-epoch steps since the best that
        must go up for the curve to count as rising (divergence, overfitting);
        an oscillating curve goes up about half the time.
    divergence_epochs: epochs since the best before a rise can be a divergence.
    divergence_rise: ... and how far above the best (relative) it must be.
    overfitting_epochs, overfitting_rise: the same for overfitting, which is
        gentler: a small steady rise while the train loss keeps falling.
    overfitting_gap: the other overfitting: val - train on the same terms is
        at least this share of the val loss for `overfitting_epochs` epochs
        while the val loss made no progress beyond its swings in `slow_window`
        epochs (the unstable run's authors flagged a gap above 0.10 at a val
        loss of 0.43, i.e. 23 %; losses differ in scale, so a share).
    instability_window: epochs per rolling window (>= 4: a quadratic trend is
        removed from each).
    instability_rel_std: rolling std of the val loss about the window's trend,
        relative to its level (std of log loss); above it a window is unstable
        when it also oscillates. Detrending keeps a fast healthy descent quiet.
        0.08: the unstable run (val jumping between 0.4304 and 0.5360) scores
        0.10-0.15; its authors' own rule was a plain std above 0.05 at a loss
        of ~0.47 (~11 %). The healthy wall runs stay below 0.04 except for
        the windows around one bump of the encoder's val loss (0.09), which
        `instability_rises` excludes; with 3 % noise per epoch added they
        stay clean, at 0.06 a fifth of them did not.
    instability_sign_changes: oscillation = at least this many sign changes of
        successive differences in a window (a smooth curve has none).
    instability_rises: ... and the unstable windows together hold at least
        this many epoch-to-epoch rises above `instability_rel_std` of the
        level: one bump in a descent is one rise however large; a zigzag
        rises again and again.
    plateau_epochs: epochs without an improvement of at least
        `plateau_min_delta` (relative) that make a plateau (the trainer's
        early-stopping patience is usually lower: this also catches runs
        started with a large patience).
    slow_window, slow_min_improvement: still improving, but the best val loss
        fell by less than this (relative) over the last `slow_window` epochs.
    regularisation_share: a regulariser above this share of the total loss
        makes the total a poor progress signal.
    regularisation_names: a component is a regulariser when one of the
        underscore-separated words of its name is in this list (`latent_reg`),
        or when the training total has it and the validation total does not.
    mismatch_share: terms the train and val totals do not share (or weigh
        differently) that add up to more than this share of the val loss
        make the totals different losses (`train_val_gap`).
    """

    rising_fraction: float = 0.6
    divergence_epochs: int = 3
    divergence_rise: float = 0.2
    overfitting_epochs: int = 3
    overfitting_rise: float = 0.02
    overfitting_gap: float = 0.2
    instability_window: int = 5
    instability_rel_std: float = 0.08
    instability_sign_changes: int = 2
    instability_rises: int = 2
    plateau_epochs: int = 10
    plateau_min_delta: float = 1e-3
    slow_window: int = 10
    slow_min_improvement: float = 0.01
    regularisation_share: float = 0.3
    regularisation_names: tuple[str, ...] = ("reg", "kl", "penalty")
    mismatch_share: float = 0.1

    def __post_init__(self) -> None:
        for name in ("divergence_epochs", "overfitting_epochs", "plateau_epochs", "slow_window", "instability_rises"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.instability_window < 4:
            raise ValueError(f"instability_window={self.instability_window}: must be >= 4")
        if not 1 <= self.instability_sign_changes <= self.instability_window - 2:
            raise ValueError(f"instability_sign_changes={self.instability_sign_changes}: must be in [1, "
                             f"instability_window - 2 = {self.instability_window - 2}]")
        for name in ("rising_fraction", "regularisation_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be in (0, 1]")
        for name in ("divergence_rise", "overfitting_rise", "overfitting_gap", "instability_rel_std",
                     "plateau_min_delta", "slow_min_improvement", "mismatch_share"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 0")

    @classmethod
    def parse(cls, items: Iterable[str]) -> "Thresholds":
        """Overrides like `plateau_epochs=20` or `regularisation_names=reg,kl` (the CLI's --threshold)."""
        types = {f.name: f.type for f in fields(cls)}
        changes: dict[str, Any] = {}
        for item in items:
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in types:
                raise ValueError(f"threshold {item!r}: expected KEY=VALUE with KEY one of {sorted(types)}")
            kind = types[key]
            try:
                if kind.startswith("tuple"):
                    changes[key] = tuple(v.strip() for v in value.split(",") if v.strip())
                else:
                    changes[key] = int(value) if kind == "int" else float(value)
            except ValueError as exc:
                raise ValueError(f"threshold {item!r}: {key} takes a {kind}") from exc
        return replace(cls(), **changes)


@dataclass(frozen=True)
class Finding:
    """One problem in one phase. `evidence` always has `epochs` and `values`
    (the stretch of the curve that shows it) plus named numbers."""

    kind: str
    phase: str
    severity: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    recommendation: str = ""

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def rolling_rel_std(values: np.ndarray, window: int) -> np.ndarray:
    """(n - window + 1,) std about each window's quadratic trend, relative to
    the level: of log(values) when all are > 0, else std / |mean|. In log
    space an exponential descent is a line and its slowing down a curve, so
    a smooth descent scores ~0 and only swings about the trend remain."""
    v = np.asarray(values, dtype=float)
    if len(v) < window:
        return np.empty(0)
    w = sliding_window_view(v, window)  # (n - window + 1, window)
    positive = (w > 0).all(axis=1)
    y = np.where(positive[:, None], np.log(np.where(w > 0, w, 1.0)), w)
    basis = np.vander(np.arange(window) - (window - 1) / 2, 3)  # (window, 3): x^2, x, 1
    resid = y - y @ (basis @ np.linalg.pinv(basis)).T  # minus the least-squares quadratic
    std = np.sqrt((resid ** 2).sum(axis=1) / (window - 3))
    return std / np.where(positive, 1.0, np.abs(w.mean(axis=1)) + 1e-12)


def sign_changes(values: np.ndarray, window: int) -> np.ndarray:
    """(n - window + 1,) sign changes of successive differences per window (oscillation)."""
    v = np.asarray(values, dtype=float)
    if len(v) < window:
        return np.empty(0, dtype=int)
    s = np.sign(np.diff(v))
    flips = np.concatenate([[0], np.cumsum(s[1:] * s[:-1] < 0)])  # flips[k]: changes before diff pair k
    return flips[window - 2:] - flips[:len(flips) - window + 2]


def unstable_windows(values: np.ndarray, t: "Thresholds") -> tuple[np.ndarray, int]:
    """(n - window + 1,) bool: the windows that swing (rolling_rel_std above
    `instability_rel_std`) and oscillate (`instability_sign_changes`), all
    False unless together they hold `instability_rises` rises; and that count
    of rises. The instability check and the monitor's plot both use it."""
    v, w = np.asarray(values, dtype=float), t.instability_window
    rel, flips = rolling_rel_std(v, w), sign_changes(v, w)
    bad = (rel > t.instability_rel_std) & (flips >= t.instability_sign_changes)
    covered = np.zeros(len(v), dtype=bool)  # epochs inside a bad window
    for i in np.flatnonzero(bad):
        covered[i:i + w] = True
    step = np.diff(v) / np.where(v[:-1] != 0, np.abs(v[:-1]), np.nan)
    rises = int(np.sum((step > t.instability_rel_std) & covered[1:] & covered[:-1]))
    return (bad if rises >= t.instability_rises else np.zeros_like(bad)), rises


def series(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """(len(rows),) float values of `key`; NaN where missing or not a number."""
    return np.array([num(r.get(key)) for r in rows], dtype=float)


class Curve:
    """One phase's monitored loss with its finite epochs, and the other series."""

    def __init__(self, phase: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self.phase, self.rows = phase, rows
        self.split = "val" if any(math.isfinite(num(r.get("val_loss"))) for r in rows) else "train"
        self.label = f"{self.split} loss"
        epochs, loss = series(rows, "epoch"), series(rows, f"{self.split}_loss")
        ok = np.isfinite(loss)
        self.idx = np.flatnonzero(ok)  # rows with a finite monitored loss
        self.epochs, self.loss = epochs[ok].astype(int), loss[ok]
        self.train = series(rows, "train_loss")[ok] if self.split == "val" else None
        self.lr = series(rows, "lr")[ok]

    def lr_at(self, i: int) -> float:
        return float(self.lr[i]) if len(self.lr) else math.nan

    def evidence(self, start: int, **extra: Any) -> dict[str, Any]:
        return {"epochs": self.epochs[start:].tolist(), "values": rounded(self.loss[start:]), **extra}

    def noise(self, t: Thresholds) -> float:
        """The curve's typical swing lately, relative to its level: the median
        rolling_rel_std of the windows within the last `slow_window` epochs
        (0 for a curve shorter than one window). A new best smaller than this
        is as likely luck as progress."""
        w = t.instability_window
        r = rolling_rel_std(self.loss[-(t.slow_window + w - 1):], w)
        return float(np.median(r)) if len(r) else 0.0


def make(c: Curve, kind: str, message: str, evidence: dict[str, Any], recommendation: str) -> Finding:
    return Finding(kind, c.phase, SEVERITY[kind], message, json_safe(evidence), recommendation)


# Numbers ----------------------------------------------------------------------------
def num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def rounded(a: np.ndarray) -> list[float]:
    return [float(f"{x:.6g}") for x in np.asarray(a, dtype=float)]


def json_safe(v: Any) -> Any:
    """Plain JSON types; NaN/Inf as strings ("nan", "inf"), which strict JSON has no literal for."""
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, (np.integer, np.floating)):
        v = v.item()
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return v
