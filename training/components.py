"""Loss components of a metrics log: their weights in each total, and how much
of a train/val gap comes from terms the two totals do not share.

The trainer logs, per epoch, each split's total (`train_loss`, `val_loss`) and
its components (`train_recon`, `val_pred_visual`, ...), and since issue 15 the
weight of each component in each total (`"loss_weights": {"train": {name: w},
"val": {...}}`). Other logs (older runs, other trainers) may lack the weights,
log a component unweighted (`reg` for a total with `0.1 * reg`), or have terms
in the training total that validation lacks (a regulariser). The weights are
then recovered from the log itself: unit weights when the components add up to
the total, else a least-squares fit over the epochs (exact when the total is a
fixed weighted sum and the components do not move in lockstep).

The gap decomposes exactly, with w_s[k] the weight of term k in split s's
total (0 when absent) and c_s[k] its logged value:

    train_total - val_total
      = sum_k (w_train[k] - w_val[k]) * c_train[k]   terms not shared, or weighted differently
      + sum_k w_val[k] * (c_train[k] - c_val[k])     the same loss on both splits
    (val-only terms count in the first sum as -w_val[k] * c_val[k].)

Only the second part says anything about generalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

NOT_COMPONENTS = ("loss", "grad_norm")  # train_/val_ keys that are not loss components
SPLITS = ("train", "val")
WEIGHTS_KEY = "loss_weights"
SUM_TOLERANCE = 1e-3  # relative; logged components are epoch means of float32 values


def component_names(rows: Sequence[Mapping[str, Any]], split: str) -> list[str]:
    """Names of `split`'s logged loss components (numbers only), in first-seen order."""
    prefix, names = f"{split}_", {}
    for row in rows:
        for k, v in row.items():
            if k.startswith(prefix) and k[len(prefix):] not in NOT_COMPONENTS and _is_num(v):
                names.setdefault(k[len(prefix):], None)
    return list(names)


@dataclass(frozen=True)
class Weights:
    """Weights of one split's components in its total, and where they came from:
    "logged" (the row's `loss_weights`), "sum" (unit weights add up), "fit"
    (least squares over the epochs) or "unknown" (unit weights that do not add
    up: the rest of the total is reported as unexplained)."""

    split: str
    weights: dict[str, float]
    source: str


def split_weights(rows: Sequence[Mapping[str, Any]], split: str) -> Weights:
    names = component_names(rows, split)
    logged = rows[-1].get(WEIGHTS_KEY, {}) if rows else {}
    if isinstance(logged, Mapping) and isinstance(logged.get(split), Mapping):
        given = logged[split]
        return Weights(split, {k: float(given.get(k, 1.0)) for k in names}, "logged")
    unit = {k: 1.0 for k in names}
    if not names:
        return Weights(split, unit, "sum")
    comps = np.array([[_num(r.get(f"{split}_{k}")) for k in names] for r in rows])  # (epochs, K)
    total = np.array([_num(r.get(f"{split}_loss")) for r in rows])  # (epochs,)
    ok = np.isfinite(total) & np.isfinite(comps).all(axis=1)
    comps, total = comps[ok], total[ok]
    if not len(total):
        return Weights(split, unit, "unknown")
    scale = np.abs(total) + 1e-12
    if (np.abs(comps.sum(axis=1) - total) <= SUM_TOLERANCE * scale).all():
        return Weights(split, unit, "sum")
    w, _, rank, _ = np.linalg.lstsq(comps, total, rcond=None)
    if rank == len(names) and (np.abs(comps @ w - total) <= SUM_TOLERANCE * scale).all():
        return Weights(split, {k: float(f"{x:.6g}") for k, x in zip(names, w)}, "fit")
    return Weights(split, unit, "unknown")


@dataclass(frozen=True)
class GapDecomposition:
    """train_total - val_total at one epoch, split as in the module docstring.

    not_shared: per term, (w_train - w_val) * c_train (or -w_val * c_val for a
        val-only term): what the totals' different make-up adds to the gap.
    train_same_loss: the training split scored with the val total's terms and
        weights; `val_total - train_same_loss` is the like-for-like gap.
    unexplained: the part of the gap the logged components do not account for
        (0 when the weights are known or recovered).
    """

    epoch: int
    train_total: float
    val_total: float
    not_shared: dict[str, float]
    weights: dict[str, Weights]
    train_same_loss: float
    shared: list[str] = field(default_factory=list)
    unexplained: float = 0.0

    @property
    def gap(self) -> float:
        return self.train_total - self.val_total

    @property
    def not_shared_total(self) -> float:
        return float(sum(self.not_shared.values()))

    @property
    def same_loss_gap(self) -> float:
        """val - train on the same loss (> 0: the model does worse on validation)."""
        return self.val_total - self.train_same_loss


def decompose_gap(rows: Sequence[Mapping[str, Any]]) -> GapDecomposition | None:
    """The decomposition at the last epoch with both totals finite; None
    without one. Rows are one phase's, in epoch order."""
    at = [i for i, r in enumerate(rows) if _is_finite(r.get("train_loss")) and _is_finite(r.get("val_loss"))]
    if not at:
        return None
    row = rows[at[-1]]
    w = {s: split_weights(rows, s) for s in SPLITS}
    c = {s: {k: _num(row.get(f"{s}_{k}")) for k in w[s].weights} for s in SPLITS}
    c = {s: {k: v for k, v in c[s].items() if math.isfinite(v)} for s in SPLITS}
    wt, wv = w["train"].weights, w["val"].weights
    train_total, val_total = float(row["train_loss"]), float(row["val_loss"])
    if not c["train"] or not c["val"]:  # one split logs only its total: nothing to compare term by term
        return GapDecomposition(int(row["epoch"]), train_total, val_total, {}, w, train_total)
    not_shared: dict[str, float] = {}
    for k, v in c["train"].items():
        diff = (wt[k] - (wv[k] if k in c["val"] else 0.0)) * v
        if diff:
            not_shared[k] = diff
    for k, v in c["val"].items():
        if k not in c["train"]:
            not_shared[k] = -wv[k] * v
    shared = [k for k in c["val"] if k in c["train"]]
    explained_train = sum(wt[k] * v for k, v in c["train"].items())
    explained_val = sum(wv[k] * v for k, v in c["val"].items())
    # the val total's own terms scored on the training split (plus what the val terms leave out of its total)
    train_same = sum(wv[k] * c["train"][k] for k in shared) + (val_total - explained_val)
    return GapDecomposition(int(row["epoch"]), train_total, val_total, not_shared, w, float(train_same), shared,
                            float((train_total - explained_train) - (val_total - explained_val)))


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_finite(v: Any) -> bool:
    return _is_num(v) and math.isfinite(v)


def _num(v: Any) -> float:
    return float(v) if _is_num(v) else math.nan
