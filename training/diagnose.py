"""Training diagnosis: what is wrong with a run, from its metrics, and what to change.

Pure functions over the rows of RUN_DIR/metrics.jsonl (one dict per epoch:
phase, epoch, lr, train_*/val_* loss components, train_grad_norm). Each phase
is analysed on its own: a phase change resets the epoch counter and the loss
scale, and is not a divergence. The monitored curve is `val_loss` (the
trainer's selection criterion), `train_loss` where a phase has no validation.

Findings, at most one of each kind per phase:
    non_finite                NaN/Inf in any logged value
    instability               the val loss zigzags about its trend (rolling std, oscillation)
    divergence                rising after its best while the train loss rises too
    overfitting               rising after its best while the train loss falls, or
                              stalled far above the train loss on the same terms
    plateau                   no improvement for many epochs
    slow_convergence          still improving, but by little (on a noisy curve:
                              by less than the val loss's swings)
    regularisation_dominated  a regulariser is a large share of a total loss
    train_val_gap             the train and val totals are not the same loss: how
                              much of their gap the unshared terms account for
The four trend kinds describe one curve's end state and exclude each other,
most specific first: divergence > overfitting > plateau > slow_convergence
(a diverging run has also stopped improving; saying so adds nothing). Where a
curve allows two readings (a noisy plateau that is slow progress, a gap that
was there from the first epoch) the finding says both, with the evidence of
each (`evidence["other_reading"]`).

`new_findings(history)` is what the trainer calls after each epoch: the
findings the last row brought, so each is logged once, the epoch it appears.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from training.components import NOT_COMPONENTS  # noqa: F401  (re-exported: the monitor plots components)
from training.diagnose_losses import overfitting_gap, regularisation, train_val_gap
from training.findings import (KINDS, RESUME_BEST, SEVERITY, Curve, Finding, Thresholds,  # noqa: F401
                               make, num, rolling_rel_std, rounded, series, sign_changes, unstable_windows)


def split_phases(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Rows per phase in order of first appearance, sorted by epoch; a repeated
    epoch (a resume that re-ran it) keeps its last row."""
    phases: dict[str, dict[int, Mapping[str, Any]]] = {}
    for row in rows:
        if "phase" in row and "epoch" in row:
            phases.setdefault(str(row["phase"]), {})[int(row["epoch"])] = row
    return {p: [by_epoch[e] for e in sorted(by_epoch)] for p, by_epoch in phases.items()}


def diagnose(rows: Iterable[Mapping[str, Any]], thresholds: Thresholds = Thresholds()) -> list[Finding]:
    """All findings of a run, phase by phase; an empty list for a healthy run."""
    t, out = thresholds, []
    for phase, prows in split_phases(rows).items():
        c = Curve(phase, prows)
        unstable = _instability(c, t)
        trend = _trend(c, t, unstable is not None)
        if trend is not None and trend.kind == "divergence":
            unstable = None  # a zigzag on the way up: the divergence says it (learning rate too high) and more
        found = [_non_finite(c), unstable, trend, overfitting_gap(c, t, trend), regularisation(c, t),
                 train_val_gap(c, t)]
        out += [f for f in found if f is not None]
    return out


def new_findings(history: Sequence[Mapping[str, Any]], thresholds: Thresholds = Thresholds()) -> list[Finding]:
    """Findings present after the last row that were not present before it."""
    before = {(f.kind, f.phase) for f in diagnose(history[:-1], thresholds)}
    return [f for f in diagnose(history, thresholds) if (f.kind, f.phase) not in before]


def format_findings(findings: Sequence[Finding]) -> str:
    if not findings:
        return "no findings: the run looks healthy"
    lines = []
    for f in findings:
        lines += [f"[{f.severity}] {f.phase} {f.kind}: {f.message}", f"    -> {f.recommendation}"]
    return "\n".join(lines)


# Checks on the monitored curve ---------------------------------------------------------
def _non_finite(c: Curve) -> Finding | None:
    bad = [(int(r["epoch"]), k, v) for r in c.rows for k, v in r.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v)]
    if not bad:
        return None
    first = bad[0][0]
    finite_before = np.flatnonzero(c.epochs < first)
    best = int(c.epochs[finite_before[np.argmin(c.loss[finite_before])]]) if len(finite_before) else None
    lr = num(c.rows[-1].get("lr"))
    restart = (f"the best checkpoint (epoch {best}: `{RESUME_BEST.format(lr=lr * 0.3)}`)" if best is not None
               else "scratch")
    keys = sorted({k for _, k, _ in bad})
    return make(c, "non_finite", f"NaN/Inf from epoch {first} in {len(bad)} values: {', '.join(keys)}",
                {"epochs": [e for e, _, _ in bad], "fields": [k for _, k, _ in bad],
                 "values": [str(v) for _, _, v in bad], "best_epoch": best},
                f"restart from {restart} with a lower learning rate (now {lr:.2g}, try {lr * 0.3:.2g}) and "
                "gradient clipping on; check the data and the loss for NaN/Inf sources (log of 0, division "
                "by a zero std)")


def _instability(c: Curve, t: Thresholds) -> Finding | None:
    w = t.instability_window
    rel, flips = rolling_rel_std(c.loss, w), sign_changes(c.loss, w)
    bad, rises = unstable_windows(c.loss, t)
    unstable = np.flatnonzero(bad)
    if len(unstable) == 0:
        return None
    worst = int(unstable[np.argmax(rel[unstable])])
    e0, e1 = int(c.epochs[worst]), int(c.epochs[worst + w - 1])
    first, last = int(unstable[0]), int(unstable[-1]) + w  # the unstable stretch: [first, last)
    lo, hi = float(c.loss[first:last].min()), float(c.loss[first:last].max())
    level = float(c.loss[worst:worst + w].mean())
    lr = c.lr_at(worst + w - 1)
    return make(c, "instability",
                f"{c.label} zigzags between {lo:.4g} and {hi:.4g} over epochs {int(c.epochs[first])}-"
                f"{int(c.epochs[last - 1])}: worst over epochs {e0}-{e1}, std {rel[worst]:.0%} of its level "
                f"(~{rel[worst] * level:.3g}) about the trend with {flips[worst]} direction changes "
                f"({len(unstable)} unstable {w}-epoch windows, {rises} rises above {t.instability_rel_std:.0%})",
                {"epochs": c.epochs[worst:worst + w].tolist(), "values": rounded(c.loss[worst:worst + w]),
                 "rolling_rel_std": round(float(rel[worst]), 4), "rolling_std": rel[worst] * level,
                 "sign_changes": int(flips[worst]), "unstable_windows": len(unstable), "rises": rises,
                 "range": [lo, hi], "range_epochs": [int(c.epochs[first]), int(c.epochs[last - 1])], "lr": lr},
                f"lower the learning rate 2-5x (now {lr:.2g}, try {lr * 0.2:.2g}-{lr * 0.5:.2g}), use larger "
                "batches (less gradient noise per step) and, if the loss has several weighted terms, a simpler "
                "loss; tighter gradient clipping also helps; if the swings started after a learning-rate "
                "change, revisit the schedule")


def _trend(c: Curve, t: Thresholds, unstable: bool) -> Finding | None:
    """The curve's end state, most specific first. On an unstable curve a
    stalled best may be noise hiding slow progress: that reading comes first."""
    if len(c.loss) < 2:
        return None
    return _rising(c, t) or (_noisy_slow(c, t) if unstable else None) or _plateau(c, t) or _slow(c, t)


def _rising(c: Curve, t: Thresholds) -> Finding | None:
    """Rising since its best: divergence if the train loss rises too, overfitting if it falls."""
    n, b = len(c.loss), int(np.argmin(c.loss))  # b: first epoch of the best value
    best, last, since = float(c.loss[b]), float(c.loss[-1]), n - 1 - b
    if since == 0 or np.mean(np.diff(c.loss[b:]) > 0) < t.rising_fraction:
        return None
    rise = last / best - 1 if best > 0 else math.inf
    lr, e_best = c.lr_at(n - 1), int(c.epochs[b])
    ev = c.evidence(b, best_epoch=e_best, best_value=best, epochs_since_best=since, rise=rise, lr=lr)
    train_falls = c.train is not None and bool(c.train[-1] < c.train[b])
    if not train_falls and since >= t.divergence_epochs and rise >= t.divergence_rise:
        train = "" if c.train is None else (f"; train loss {c.train[b]:.4g} -> {c.train[-1]:.4g}, rising too: the "
                                            "learning rate is too high (not overfitting, not underfitting)")
        if b == 0:  # never improved after the first epoch: that epoch was luck, not a good point to go back to
            advice = (f"restart the phase from scratch with a 10x lower learning rate (now {lr:.2g}, try "
                      f"{lr * 0.1:.2g}), not from the epoch-{e_best} checkpoint: the run never improved after it, "
                      "so it was a lucky start on a diverging trajectory; keep early stopping and ReduceLROnPlateau "
                      "on so a repeat stops itself")
        else:
            advice = (f"lower the learning rate (now {lr:.2g}, try {lr * 0.3:.2g}) and restart from the best "
                      f"checkpoint (epoch {e_best}), not the latest one, which holds the diverging weights: "
                      f"`{RESUME_BEST.format(lr=lr * 0.3)}`")
        return make(c, "divergence",
                    f"{c.label} rising for {since} epochs after its best {best:.4g} at epoch {e_best}: "
                    f"{last:.4g} (+{rise:.0%}) at epoch {c.epochs[-1]}{train}",
                    {**ev, "restart": "scratch" if b == 0 else "best"}, advice)
    if train_falls and since >= t.overfitting_epochs and rise >= t.overfitting_rise:
        gap_b, gap = best - c.train[b], last - c.train[-1]  # val up, train down: the gap grows
        return make(c, "overfitting",
                    f"{c.label} up {rise:.1%} in {since} epochs since its best {best:.4g} at epoch {e_best} "
                    f"while train loss fell {1 - c.train[-1] / c.train[b]:.1%}; train/val gap {gap_b:.3g} -> "
                    f"{gap:.3g}", {**ev, "train": rounded(c.train[b:]), "gap_at_best": gap_b, "gap": gap},
                    f"stop and keep the best checkpoint (epoch {e_best}): more epochs only fit the training "
                    "split; add data or augmentation, raise weight decay, or shrink the model")
    return None


def _noisy_slow(c: Curve, t: Thresholds) -> Finding | None:
    """On an unstable curve: the train loss (an average over a whole epoch of
    steps, so smooth) still improves, but over one window by less than the val
    loss swings, so validation cannot show the progress and its best-so-far
    is luck. The plateau its best alone suggests is the other reading."""
    w, n = t.instability_window, len(c.loss)
    if c.train is None or n <= w:
        return None
    gain = float(c.train[-1 - w] - c.train[-1])
    level = float(c.loss[-w:].mean())
    swing = c.noise(t) * level
    if not 0 < gain < swing:
        return None
    s = _last_improvement(c.loss, t.plateau_min_delta)
    stalled, e_best, best = n - 1 - s, int(c.epochs[s]), float(c.loss[s])
    total = float(c.train[0] - c.train[-1])
    lr = c.lr_at(n - 1)
    other = (f"read by its best alone, a plateau: best {best:.4g} at epoch {e_best}, not beaten for {stalled} "
             "epochs; with swings this large a new best is mostly luck" if stalled >= t.plateau_epochs else
             f"its best {best:.4g} at epoch {e_best} is within those swings, so it shows no trend either way")
    return make(c, "slow_convergence",
                f"slow: the train loss improved {gain:.3g} over the last {w} epochs ({c.train[-1 - w]:.4g} -> "
                f"{c.train[-1]:.4g}; {total:.3g} or {total / c.train[0]:.0%} since epoch {int(c.epochs[0])}), less "
                f"than the {c.label} swings (~{swing:.3g}, {c.noise(t):.0%} of its level), so validation cannot "
                f"show the progress; {other}",
                c.evidence(max(0, n - 1 - t.slow_window), train=rounded(c.train), train_gain_last_window=gain,
                           train_gain_total=total, val_swing=swing, lr=lr,
                           other_reading={"kind": "plateau", "best_epoch": e_best, "best_value": best,
                                          "epochs_since_best": stalled}),
                f"lower the learning rate (now {lr:.2g}, try {lr * 0.2:.2g}) and use larger batches: steadier "
                "steps let both curves show progress; then judge convergence on the val loss again")


def _plateau(c: Curve, t: Thresholds) -> Finding | None:
    n, s = len(c.loss), _last_improvement(c.loss, t.plateau_min_delta)
    stalled, e_best = n - 1 - s, int(c.epochs[s])
    if stalled < t.plateau_epochs:
        return None
    lr_s, lr = c.lr_at(s), c.lr_at(n - 1)
    saved = stalled - t.plateau_epochs
    stop = (f"stop and keep the best checkpoint (epoch {e_best}): the run converged there; early stopping with "
            f"patience {t.plateau_epochs} would have ended it at epoch {e_best + t.plateau_epochs}"
            + (f", {saved} epochs sooner" if saved else ""))
    advice = (f"{stop}. Learning-rate cuts ({lr_s:.2g} -> {lr:.2g}) did not help, so more epochs will not either"
              if lr < lr_s else
              f"{stop}. If you expect more from this model, resume from the best with a lower learning rate: "
              f"`{RESUME_BEST.format(lr=lr * 0.3)}`")
    return make(c, "plateau",
                f"no {c.label} improvement above {t.plateau_min_delta:.1%} for {stalled} epochs: best "
                f"{c.loss[s]:.4g} at epoch {e_best}, {stalled} of {n} epochs ({stalled / n:.0%}) spent after it"
                + (f", ranging {c.loss[s + 1:].min():.4g}-{c.loss[s + 1:].max():.4g} since" if stalled
                   else ""),
                c.evidence(s, best_epoch=e_best, best_value=float(c.loss[s]), epochs_since_best=stalled,
                           lr_at_best=lr_s, lr=lr), advice)


def _slow(c: Curve, t: Thresholds) -> Finding | None:
    """Still setting new bests (else a plateau), but the best moved little over the window."""
    n, w = len(c.loss), t.slow_window
    if n <= w:
        return None
    runmin = np.minimum.accumulate(c.loss)
    before, now = float(runmin[-w - 1]), float(runmin[-1])
    gain = 1 - now / before if before > 0 else 0.0
    if not 0 < gain < t.slow_min_improvement:
        return None
    lr, top = c.lr_at(n - 1), float(np.nanmax(c.lr)) if np.isfinite(c.lr).any() else math.nan
    to_go = math.log(0.9) / math.log(1 - gain) * w
    advice = (f"the learning rate was cut to {lr:.2g} (from {top:.2g}): raise min_lr or lr_patience if this is "
              "too slow" if lr < top else
              f"raise the learning rate (now {lr:.2g}) if the curve stays smooth, or stop if this loss is good enough")
    return make(c, "slow_convergence",
                f"{c.label} still improving but slowly: {gain:.2%} over the last {w} epochs ({before:.4g} -> "
                f"{now:.4g}); another 10% at this rate takes ~{to_go:.0f} epochs",
                c.evidence(n - 1 - w, improvement=gain, lr=lr), advice)


def _last_improvement(loss: np.ndarray, min_delta: float) -> int:
    """Index of the last value that beat the best so far by at least `min_delta` (relative)."""
    best, at = loss[0], 0
    for i, v in enumerate(loss[1:], start=1):
        if v < best * (1 - min_delta) if best > 0 else v < best - min_delta:
            best, at = v, i
    return at
