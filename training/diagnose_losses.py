"""Checks on a phase's loss make-up (training/components.py): a regulariser
that dominates a total, train and val totals that are different losses, and
a val loss stalled far above the train loss on the same terms (overfitting
without a rise). training/diagnose.py calls them per phase."""

from __future__ import annotations

from typing import Any

import numpy as np

from training.components import GapDecomposition, component_names, decompose_gap, split_weights
from training.findings import Curve, Finding, Thresholds, make, num


def regularisation(c: Curve, t: Thresholds) -> Finding | None:
    """A regulariser above `regularisation_share` of a split's total, val first
    (the monitored loss), else train. A term the training total has and the
    validation total lacks is a regulariser whatever its name."""
    val_names = component_names(c.rows, "val")
    for split in ("val", "train"):
        names = component_names(c.rows, split)
        at = [r for r in c.rows if num(r.get(f"{split}_loss")) > 0]
        if not names or not at:
            continue
        first, row, prefix = at[0], at[-1], f"{split}_"
        weights = split_weights(c.rows, split).weights
        regs = [k for k in names if set(k.split("_")) & set(t.regularisation_names)
                or (split == "train" and val_names and k not in val_names)]
        total = num(row[f"{split}_loss"])
        shares = {k: weights[k] * num(row.get(prefix + k)) / total for k in names}
        share = sum(shares[k] for k in regs)
        if not regs or not share > t.regularisation_share:
            continue
        data = [k for k in names if k not in regs]
        change = {k: num(row.get(prefix + k)) / num(first.get(prefix + k)) - 1 for k in data + ["loss"]
                  if num(first.get(prefix + k)) > 0}
        trend = ", ".join(f"{k} {v:+.0%}" for k, v in change.items())
        lacks = [k for k in regs if split == "train" and val_names and k not in val_names]
        return make(c, "regularisation_dominated",
                    f"{' + '.join(regs)} is {share:.0%} of the {split} loss at epoch {row['epoch']} (shares: "
                    + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()) + f"); since epoch {first['epoch']}: "
                    f"{trend}" + (f"; the val loss has no {', '.join(lacks)}" if lacks else ""),
                    {"epochs": [int(first["epoch"]), int(row["epoch"])], "split": split,
                     "values": [num(first.get(f"{split}_loss")), total], "shares": shares,
                     "regularisation_share": share, "change_since_first": change},
                    f"judge progress by {', '.join(data) or 'the data terms'}, not the {split} total, which mostly "
                    "tracks the regulariser; if the data term stalls, lower the regularisation weight")
    return None


def train_val_gap(c: Curve, t: Thresholds) -> Finding | None:
    """The train and val totals differ by terms they do not share (or weigh
    differently) worth more than `mismatch_share` of the val loss: say how
    much of the gap those terms are, and what is left on the same loss."""
    d = decompose_gap(c.rows)
    if d is None or not abs(d.not_shared_total) > t.mismatch_share * abs(d.val_total):
        return None
    wt, wv = d.weights["train"].weights, d.weights["val"].weights
    terms = []
    for k, v in d.not_shared.items():
        if k in d.shared:
            terms.append(f"{k} weighted {wt[k]:.3g} in train and {wv[k]:.3g} in val: {v:+.4g}")
        elif k in wt and k not in d.shared:
            raw = num(c.rows[-1].get(f"train_{k}"))
            terms.append(f"{k} {v:.4g}" + (f" ({wt[k]:.3g} x {raw:.4g})" if abs(wt[k] - 1) > 1e-9 else ""))
        else:
            terms.append(f"{k} {v:+.4g} (val only)")
    share = d.not_shared_total / d.gap if d.gap else float("inf")
    rel = d.same_loss_gap / d.val_total if d.val_total else float("nan")
    same = ", ".join(d.shared) or "the terms both totals share"
    verdict = ("not overfitting" if rel < t.overfitting_gap else
               "that part is a generalisation gap (see overfitting)")
    fitted = [s for s, w in d.weights.items() if w.source == "fit"]
    unexplained = ("; weights of the " + " and ".join(fitted) + " terms fitted from the log (it logs no loss_weights)"
                   if fitted else "")
    unexplained += (f"; {d.unexplained:+.4g} of the gap is not in the logged components" if abs(d.unexplained) >
                   1e-3 * abs(d.val_total) else "")
    return make(c, "train_val_gap",
                f"train loss {d.train_total:.4g} vs val loss {d.val_total:.4g} at epoch {d.epoch}: the two totals "
                f"are different losses. Terms the training total has that the val total lacks or weighs "
                f"differently: {'; '.join(terms)}; together {d.not_shared_total:.4g}, {share:.0%} of the "
                f"{d.gap:+.4g} gap. On the same terms ({same}) train {d.train_same_loss:.4g} vs val "
                f"{d.val_total:.4g}: val {rel:+.0%} of its level, {verdict}{unexplained}",
                _evidence(d, share, rel),
                f"compare train and val on {same} (the components panel), not on the totals: the difference "
                f"is {', '.join(d.not_shared)}, not overfitting; to make the totals comparable, add the same "
                "terms to the validation loss or report the training loss without them")


def overfitting_gap(c: Curve, t: Thresholds, trend: Finding | None) -> Finding | None:
    """Overfitting without a rising val loss: on the same terms, val stays at
    least `overfitting_gap` above train for `overfitting_epochs` epochs while
    the val loss makes no progress beyond its own swings (or
    `slow_min_improvement`): the mean of its last `instability_window` epochs
    is no better than that of the window before, by more than twice the
    standard error of such a difference (means, not the best-so-far, which
    on a noisy curve keeps falling by luck). A rising val loss is the trend
    check's (divergence or overfitting)."""
    if c.split != "val" or c.train is None or (trend is not None and trend.kind in ("divergence", "overfitting")):
        return None
    k, n = t.overfitting_epochs, len(c.loss)
    if n < k:
        return None
    gaps = [decompose_gap(c.rows[:i + 1]) for i in c.idx[-k:]]
    rels = [d.same_loss_gap / d.val_total if d is not None and d.val_total > 0 else -np.inf for d in gaps]
    if not min(rels) >= t.overfitting_gap:
        return None
    w = min(t.instability_window, n // 2)
    if w < 2:
        return None
    before, now = float(c.loss[-2 * w:-w].mean()), float(c.loss[-w:].mean())
    progress = 1 - now / before if before > 0 else 0.0
    if progress > max(t.slow_min_improvement, 2 * c.noise(t) * np.sqrt(2 / w)):
        return None  # val still improving: a gap on a converging curve is not yet a problem
    m = 2 * w - 1
    d, b = gaps[-1], int(np.argmin(c.loss))
    d0 = decompose_gap(c.rows[:c.idx[0] + 1])
    rel0 = d0.same_loss_gap / d0.val_total if d0 is not None and d0.val_total > 0 else float("nan")
    fell = float(c.train[-1 - m] - c.train[-1])
    other = (f"; the gap was already {d0.same_loss_gap:.3g} ({rel0:.0%}) at epoch {d0.epoch}, before much "
             "fitting: part of it may be a val split unlike the training one (other episodes or conditions) "
             "rather than overfitting" if rel0 >= t.overfitting_gap else "")
    return make(c, "overfitting",
                f"val loss {d.val_total:.4g} vs train {d.train_same_loss:.4g} on the same terms at epoch {d.epoch}: "
                f"a gap of {d.same_loss_gap:.3g} ({rels[-1]:.0%} of val), over {t.overfitting_gap:.0%} for the "
                f"last {k} epochs, while the val loss made no progress beyond its swings (mean of the last {w} epochs "
                f"{now:.4g} vs {before:.4g} before; best "
                f"{c.loss[b]:.4g} at epoch {int(c.epochs[b])}) and the train loss fell {fell:.3g}{other}",
                {"epochs": c.epochs[-k:].tolist(), "values": [round(float(v), 6) for v in c.loss[-k:]],
                 "train": [round(float(v), 6) for v in c.train[-k:]], "gap": d.same_loss_gap, "gap_share": rels[-1],
                 "val_progress": progress, "best_epoch": int(c.epochs[b]),
                 "other_reading": {"kind": "split_mismatch", "epoch": d0.epoch, "gap": d0.same_loss_gap,
                                   "gap_share": rel0} if other else None},
                f"the model fits the training split better than it generalises: keep the best checkpoint (epoch "
                f"{int(c.epochs[b])}); add data or augmentation, raise weight decay, or use a smaller model or a "
                "simpler loss; if the val loss also swings, steady it first (lower learning rate, larger batches): "
                "a noisy val curve cannot tell you when to stop")


def _evidence(d: GapDecomposition, share: float, rel: float) -> dict[str, Any]:
    return {"epochs": [d.epoch], "values": [d.train_total, d.val_total], "gap": d.gap,
            "not_shared": d.not_shared, "not_shared_total": d.not_shared_total, "not_shared_share": share,
            "shared": d.shared, "train_same_loss": d.train_same_loss, "same_loss_gap": d.same_loss_gap,
            "same_loss_gap_share": rel, "unexplained": d.unexplained,
            "weights": {s: {"source": w.source, "weights": w.weights} for s, w in d.weights.items()}}
