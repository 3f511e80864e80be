"""Training diagnosis: what is wrong with a run, from its metrics, and what to change.

Pure functions over the rows of RUN_DIR/metrics.jsonl (one dict per epoch:
phase, epoch, lr, train_*/val_* loss components, train_grad_norm). Each phase
is analysed on its own: a phase change resets the epoch counter and the loss
scale, and is not a divergence. The monitored curve is `val_loss` (the
trainer's selection criterion), `train_loss` where a phase has no validation.

Findings, at most one of each kind per phase:
    non_finite                NaN/Inf in any logged value
    instability               the val loss swings about its trend (rolling std, oscillation)
    divergence                rising after its best while the train loss rises too
    overfitting               rising after its best while the train loss falls
    plateau                   no improvement for many epochs
    slow_convergence          still improving, but by little
    regularisation_dominated  a regulariser is a large share of the total loss
The four trend kinds describe one curve's end state and exclude each other,
most specific first: divergence > overfitting > plateau > slow_convergence
(a diverging run has also stopped improving; saying so adds nothing).

`new_findings(history)` is what the trainer calls after each epoch: the
findings the last row brought, so each is logged once, the epoch it appears.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

KINDS = ("non_finite", "instability", "divergence", "overfitting", "plateau", "slow_convergence",
         "regularisation_dominated")
SEVERITY = {"non_finite": "error", "divergence": "error", "instability": "warning", "overfitting": "warning",
            "plateau": "warning", "slow_convergence": "info", "regularisation_dominated": "info"}
NOT_COMPONENTS = ("loss", "grad_norm")  # train_/val_ keys that are not loss components


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
    instability_window: epochs per rolling window (>= 4: a quadratic trend is
        removed from each).
    instability_rel_std: rolling std of the val loss about the window's trend,
        relative to its level (std of log loss); above it a window is unstable
        when it also oscillates. Detrending keeps a fast healthy descent quiet;
        0.15 stays clear of the ~9 % wobble of a healthy converging wall run.
    instability_sign_changes: oscillation = at least this many sign changes of
        successive differences in a window (a smooth curve has none).
    plateau_epochs: epochs without an improvement of at least
        `plateau_min_delta` (relative) that make a plateau (the trainer's
        early-stopping patience is usually lower: this also catches runs
        started with a large patience).
    slow_window, slow_min_improvement: still improving, but the best val loss
        fell by less than this (relative) over the last `slow_window` epochs.
    regularisation_share: a regulariser above this share of the total loss
        makes the total a poor progress signal.
    regularisation_names: a component is a regulariser when one of the
        underscore-separated words of its name is in this list (`latent_reg`).
    """

    rising_fraction: float = 0.6
    divergence_epochs: int = 3
    divergence_rise: float = 0.2
    overfitting_epochs: int = 3
    overfitting_rise: float = 0.02
    instability_window: int = 5
    instability_rel_std: float = 0.15
    instability_sign_changes: int = 2
    plateau_epochs: int = 10
    plateau_min_delta: float = 1e-3
    slow_window: int = 10
    slow_min_improvement: float = 0.01
    regularisation_share: float = 0.3
    regularisation_names: tuple[str, ...] = ("reg", "kl", "penalty")

    def __post_init__(self) -> None:
        for name in ("divergence_epochs", "overfitting_epochs", "plateau_epochs", "slow_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.instability_window < 4:
            raise ValueError(f"instability_window={self.instability_window}: must be >= 4")
        for name in ("rising_fraction", "regularisation_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be in (0, 1]")
        for name in ("divergence_rise", "overfitting_rise", "instability_rel_std", "plateau_min_delta",
                     "slow_min_improvement"):
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
        return _json_safe(asdict(self))


# Public helpers (the monitor plots the same quantities) ----------------------
def split_phases(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Rows per phase in order of first appearance, sorted by epoch; a repeated
    epoch (a resume that re-ran it) keeps its last row."""
    phases: dict[str, dict[int, Mapping[str, Any]]] = {}
    for row in rows:
        if "phase" in row and "epoch" in row:
            phases.setdefault(str(row["phase"]), {})[int(row["epoch"])] = row
    return {p: [by_epoch[e] for e in sorted(by_epoch)] for p, by_epoch in phases.items()}


def series(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """(len(rows),) float values of `key`; NaN where missing or not a number."""
    return np.array([_num(r.get(key)) for r in rows], dtype=float)


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


# Diagnosis ----------------------------------------------------------------------
def diagnose(rows: Iterable[Mapping[str, Any]], thresholds: Thresholds = Thresholds()) -> list[Finding]:
    """All findings of a run, phase by phase; an empty list for a healthy run."""
    out: list[Finding] = []
    for phase, prows in split_phases(rows).items():
        c = _Curve(phase, prows)
        found = [_non_finite(c), _instability(c, thresholds), _trend(c, thresholds), _regularisation(c, thresholds)]
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


class _Curve:
    """One phase's monitored loss with its finite epochs, and the other series."""

    def __init__(self, phase: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self.phase, self.rows = phase, rows
        self.split = "val" if any(math.isfinite(_num(r.get("val_loss"))) for r in rows) else "train"
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
        return {"epochs": self.epochs[start:].tolist(), "values": _round(self.loss[start:]), **extra}


def _make(c: _Curve, kind: str, message: str, evidence: dict[str, Any], recommendation: str) -> Finding:
    return Finding(kind, c.phase, SEVERITY[kind], message, _json_safe(evidence), recommendation)


def _non_finite(c: _Curve) -> Finding | None:
    bad = [(int(r["epoch"]), k, v) for r in c.rows for k, v in r.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v)]
    if not bad:
        return None
    first = bad[0][0]
    finite_before = np.flatnonzero(c.epochs < first)
    best = int(c.epochs[finite_before[np.argmin(c.loss[finite_before])]]) if len(finite_before) else None
    restart = f"the best checkpoint (epoch {best})" if best is not None else "scratch"
    lr = _num(c.rows[-1].get("lr"))
    keys = sorted({k for _, k, _ in bad})
    return _make(c, "non_finite", f"NaN/Inf from epoch {first} in {len(bad)} values: {', '.join(keys)}",
                 {"epochs": [e for e, _, _ in bad], "fields": [k for _, k, _ in bad],
                  "values": [str(v) for _, _, v in bad], "best_epoch": best},
                 f"restart from {restart} with a lower learning rate (now {lr:.2g}, try {lr * 0.3:.2g}) and "
                 "gradient clipping on; check the data and the loss for NaN/Inf sources (log of 0, division "
                 "by a zero std)")


def _instability(c: _Curve, t: Thresholds) -> Finding | None:
    w = t.instability_window
    rel, flips = rolling_rel_std(c.loss, w), sign_changes(c.loss, w)
    unstable = np.flatnonzero((rel > t.instability_rel_std) & (flips >= t.instability_sign_changes))
    if len(unstable) == 0:
        return None
    worst = int(unstable[np.argmax(rel[unstable])])
    e0, e1 = int(c.epochs[worst]), int(c.epochs[worst + w - 1])
    lr = c.lr_at(worst + w - 1)
    return _make(c, "instability",
                 f"{c.label} oscillates: std {rel[worst]:.0%} of its level about the trend with {flips[worst]} "
                 f"direction changes over epochs {e0}-{e1} ({len(unstable)} unstable {w}-epoch windows, the "
                 f"first ending at epoch {int(c.epochs[unstable[0] + w - 1])})",
                 {"epochs": c.epochs[worst:worst + w].tolist(), "values": _round(c.loss[worst:worst + w]),
                  "rolling_rel_std": round(float(rel[worst]), 4), "sign_changes": int(flips[worst]),
                  "unstable_windows": len(unstable), "lr": lr},
                 f"lower the learning rate (now {lr:.2g}, try {lr * 0.5:.2g}), or use larger batches or tighter "
                 "gradient clipping; if the swings started after a learning-rate change, revisit the schedule")


def _trend(c: _Curve, t: Thresholds) -> Finding | None:
    """The curve's end state, most specific first."""
    if len(c.loss) < 2:
        return None
    return _rising(c, t) or _plateau(c, t) or _slow(c, t)


def _rising(c: _Curve, t: Thresholds) -> Finding | None:
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
        train = "" if c.train is None else f"; train loss {c.train[b]:.4g} -> {c.train[-1]:.4g}"
        return _make(c, "divergence",
                     f"{c.label} rising for {since} epochs after its best {best:.4g} at epoch {e_best}: "
                     f"{last:.4g} (+{rise:.0%}) at epoch {c.epochs[-1]}{train}", ev,
                     f"lower the learning rate (now {lr:.2g}, try {lr * 0.3:.2g}) and restart from the best "
                     f"checkpoint (epoch {e_best}), not the latest one, which holds the diverging weights")
    if train_falls and since >= t.overfitting_epochs and rise >= t.overfitting_rise:
        gap_b, gap = best - c.train[b], last - c.train[-1]  # val up, train down: the gap grows
        return _make(c, "overfitting",
                     f"{c.label} up {rise:.1%} in {since} epochs since its best {best:.4g} at epoch {e_best} "
                     f"while train loss fell {1 - c.train[-1] / c.train[b]:.1%}; train/val gap {gap_b:.3g} -> "
                     f"{gap:.3g}", {**ev, "train": _round(c.train[b:]), "gap_at_best": gap_b, "gap": gap},
                     f"stop and keep the best checkpoint (epoch {e_best}): more epochs only fit the training "
                     "split; add data or augmentation, raise weight decay, or shrink the model")
    return None


def _plateau(c: _Curve, t: Thresholds) -> Finding | None:
    n, s = len(c.loss), _last_improvement(c.loss, t.plateau_min_delta)
    stalled, e_best = n - 1 - s, int(c.epochs[s])
    if stalled < t.plateau_epochs:
        return None
    lr_s, lr = c.lr_at(s), c.lr_at(n - 1)
    advice = (f"stop: the best checkpoint is epoch {e_best}; learning-rate cuts ({lr_s:.2g} -> {lr:.2g}) did not "
              "help, so more epochs will not either" if lr < lr_s else
              f"stop (the best checkpoint is epoch {e_best}) or reduce the learning rate (now {lr:.2g}, try "
              f"{lr * 0.3:.2g})")
    return _make(c, "plateau",
                 f"no {c.label} improvement above {t.plateau_min_delta:.1%} for {stalled} epochs: best "
                 f"{c.loss[s]:.4g} at epoch {e_best}, {stalled} of {n} epochs ({stalled / n:.0%}) spent after it",
                 c.evidence(s, best_epoch=e_best, best_value=float(c.loss[s]), epochs_since_best=stalled,
                            lr_at_best=lr_s, lr=lr), advice)


def _slow(c: _Curve, t: Thresholds) -> Finding | None:
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
    return _make(c, "slow_convergence",
                 f"{c.label} still improving but slowly: {gain:.2%} over the last {w} epochs ({before:.4g} -> "
                 f"{now:.4g}); another 10% at this rate takes ~{to_go:.0f} epochs",
                 c.evidence(n - 1 - w, improvement=gain, lr=lr), advice)


def _regularisation(c: _Curve, t: Thresholds) -> Finding | None:
    if not len(c.idx):
        return None
    row, first = c.rows[c.idx[-1]], c.rows[c.idx[0]]
    prefix = f"{c.split}_"
    names = [k[len(prefix):] for k in row if k.startswith(prefix) and k[len(prefix):] not in NOT_COMPONENTS]
    regs = [k for k in names if set(k.split("_")) & set(t.regularisation_names)]
    total = _num(row.get(f"{c.split}_loss"))
    if not regs or not total > 0:
        return None
    shares = {k: _num(row[prefix + k]) / total for k in names}
    share = sum(shares[k] for k in regs)
    if not share > t.regularisation_share:
        return None
    data = [k for k in names if k not in regs]
    change = {k: _num(row[prefix + k]) / _num(first.get(prefix + k)) - 1 for k in data + ["loss"]
              if _num(first.get(prefix + k)) > 0}
    trend = ", ".join(f"{k} {v:+.0%}" for k, v in change.items())
    return _make(c, "regularisation_dominated",
                 f"{' + '.join(regs)} is {share:.0%} of the {c.label} at epoch {row['epoch']} (shares: "
                 + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()) + f"); since epoch {first['epoch']}: {trend}",
                 {"epochs": [int(first["epoch"]), int(row["epoch"])],
                  "values": [_num(first.get(f"{c.split}_loss")), total], "shares": shares,
                  "regularisation_share": share, "change_since_first": change},
                 f"judge progress by {', '.join(data) or 'the data terms'}, not the total, which mostly tracks "
                 "the regulariser; if the data term stalls, lower the regularisation weight")


# Small helpers ----------------------------------------------------------------------
def _last_improvement(loss: np.ndarray, min_delta: float) -> int:
    """Index of the last value that beat the best so far by at least `min_delta` (relative)."""
    best, at = loss[0], 0
    for i, v in enumerate(loss[1:], start=1):
        if v < best * (1 - min_delta) if best > 0 else v < best - min_delta:
            best, at = v, i
    return at


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def _round(a: np.ndarray) -> list[float]:
    return [float(f"{x:.6g}") for x in np.asarray(a, dtype=float)]


def _json_safe(v: Any) -> Any:
    """Plain JSON types; NaN/Inf as strings ("nan", "inf"), which strict JSON has no literal for."""
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (np.integer, np.floating)):
        v = v.item()
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return v
