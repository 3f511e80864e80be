"""python -m training.monitor RUN_DIR [--watch] [--interval S] [--out DIR] [--json] [--threshold KEY=VALUE ...]

Reads RUN_DIR/metrics.jsonl (also while the trainer is still writing it) and
writes to OUT (default RUN_DIR/monitor/):
    <phase>.png     one figure per phase: train vs val loss (and the
                    planning success the trainer measured, right axis), each loss
                    component, learning rate, gradient norm, rolling std of
                    the val loss, train/val gap
    diagnosis.json  the findings (training/diagnose.py), each with evidence
                    and a recommended action, and the planning successes
                    per phase ("planning"); also printed as text (or as
                    JSON with --json)
--watch re-reads the log every --interval seconds and refreshes both when it
changed, until Ctrl-C. Thresholds: --threshold plateau_epochs=20 (repeatable;
see training.diagnose.Thresholds).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas on save
from matplotlib.ticker import MaxNLocator

from training.diagnose import (NOT_COMPONENTS, Finding, Thresholds, diagnose, format_findings, rolling_rel_std,
                               series, split_phases, unstable_windows)

log = logging.getLogger(__name__)
METRICS = "metrics.jsonl"
COLORS = {"train": "tab:blue", "val": "tab:orange"}


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics log. A last line without its newline is a row the
    trainer is still writing: skipped. Any other unreadable line is skipped
    with a warning."""
    text = Path(path).read_text()
    lines = text.split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i < len(lines) - 1:  # a complete line (newline-terminated) that is not JSON
                log.warning("%s line %d: not JSON (%s); skipped", path, i + 1, exc)
    return rows


def plot_phase(phase: str, rows: Sequence[Mapping[str, Any]], path: Path, thresholds: Thresholds,
               findings: Sequence[Finding] = ()) -> Path:
    """One PNG with six panels for one phase's rows."""
    epochs = series(rows, "epoch")
    val = series(rows, "val_loss")
    train = series(rows, "train_loss")
    fig = Figure(figsize=(15, 8.5))
    ax = fig.subplots(2, 3, gridspec_kw=dict(left=0.05, right=0.98, bottom=0.07, top=0.9, hspace=0.3,
                                              wspace=0.18)).ravel()  # fixed: constrained layout doubles the cost

    for split, y in (("train", train), ("val", val)):
        _line(ax[0], epochs, y, split, COLORS[split])
    if np.isfinite(val).any():
        b = int(np.nanargmin(val))
        ax[0].axvline(epochs[b], color="grey", ls=":", lw=1)
        right = b > len(val) / 2  # keep the label inside the axes
        ax[0].annotate(f"best {val[b]:.4g} @ {int(epochs[b])}", (epochs[b], val[b]), textcoords="offset points",
                       xytext=(-4 if right else 4, 8), ha="right" if right else "left", fontsize=8)
    _style(ax[0], "loss (train vs val)", log=True)
    add_planning_success(ax[0], rows)

    components = sorted({k.split("_", 1)[1] for r in rows for k in r
                         if k.startswith(("train_", "val_")) and k.split("_", 1)[1] not in NOT_COMPONENTS})
    for j, name in enumerate(components):
        for split, ls in (("train", "--"), ("val", "-")):
            _line(ax[1], epochs, series(rows, f"{split}_{name}"), f"{split} {name}", f"C{j + 2}", ls=ls)
    _style(ax[1], "loss components", log=True)

    _line(ax[2], epochs, series(rows, "lr"), "lr", "tab:green")
    _style(ax[2], "learning rate", log=True)
    _line(ax[3], epochs, series(rows, "train_grad_norm"), "train grad norm (pre-clip)", "tab:red")
    _style(ax[3], "gradient norm", log=True)

    w = thresholds.instability_window
    monitored = val if np.isfinite(val).any() else train
    ok = np.isfinite(monitored)
    rel, ends = rolling_rel_std(monitored[ok], w), epochs[ok][w - 1:]
    _line(ax[4], ends, rel, f"{w}-epoch window ending at the epoch", "tab:purple")
    ax[4].axhline(thresholds.instability_rel_std, color="grey", ls="--", lw=1, label="threshold")
    bad, _ = unstable_windows(monitored[ok], thresholds)  # what the instability finding counts
    if bad.any():
        ax[4].plot(ends[bad], rel[bad], "o", color="tab:red", label="unstable (oscillating, rising again and again)")
    _style(ax[4], "rolling std of val loss about its trend / level", log=False)

    _line(ax[5], epochs, val - train, "val - train", "tab:brown")
    ax[5].axhline(0, color="grey", lw=0.8)
    _style(ax[5], "train/val gap", log=False)

    mine = [f for f in findings if f.phase == phase]
    verdict = "; ".join(f"{f.severity}: {f.kind}" for f in mine) or "no findings"
    fig.suptitle(f"{phase}: {len(rows)} epochs - {verdict}", color="tab:red" if mine else "black")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=90, format="png")
    tmp.replace(path)  # a viewer never sees half a PNG
    return path


def add_planning_success(ax: Any, rows: Sequence[Mapping[str, Any]]) -> Any:
    """Planning success (the trainer's `planning_eval`) on a right-hand axis of `ax`, at the epochs
    it was measured; the twin axis, or None when no row has it."""
    measured = [r for r in rows if isinstance(r.get("planning_success"), (int, float))]
    if not measured:
        return None
    twin = ax.twinx()
    twin.plot([r["epoch"] for r in measured], [r["planning_success"] for r in measured], "s--", color="tab:green",
              label="planning success", ms=4, lw=1.2)
    twin.set_ylim(-0.05, 1.05)
    twin.set_ylabel("planning success", color="tab:green", fontsize=8)
    twin.tick_params(axis="y", labelcolor="tab:green", labelsize=8)
    twin.legend(fontsize=7, loc="upper center")
    return twin


def planning_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The measured planning successes of one phase: per epoch, the best and the last, and where the
    val loss was lowest (None when none was measured)."""
    measured = [r for r in rows if isinstance(r.get("planning_success"), (int, float))]
    if not measured:
        return None
    best = max(measured, key=lambda r: (r["planning_success"], -r.get("val_loss", math.inf)))
    val = [r for r in rows if isinstance(r.get("val_loss"), (int, float)) and math.isfinite(r["val_loss"])]
    lowest = min(val, key=lambda r: r["val_loss"]) if val else None
    return {"epochs": [int(r["epoch"]) for r in measured], "success": [r["planning_success"] for r in measured],
            "episodes": [r.get("planning_episodes") for r in measured],
            "best": {"epoch": int(best["epoch"]), "success": best["planning_success"]},
            "last": {"epoch": int(measured[-1]["epoch"]), "success": measured[-1]["planning_success"]},
            "lowest_val_epoch": int(lowest["epoch"]) if lowest else None}


def _line(ax: Any, x: np.ndarray, y: np.ndarray, label: str, color: str, ls: str = "-") -> None:
    y = np.where(np.isfinite(y), y, np.nan)  # Inf breaks the line like NaN instead of wrecking the scale
    if np.isfinite(y).any():
        ax.plot(x, y, ls, color=color, label=label, marker="." if len(x) < 40 else None, lw=1.3)


def _style(ax: Any, title: str, log: bool) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if log and any(ln.get_ydata().size and np.nanmax(ln.get_ydata()) > 0 for ln in ax.get_lines()):
        ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def report(run_dir: Path, out: Path, thresholds: Thresholds) -> dict[str, Any]:
    """Read, diagnose, plot, write OUT/diagnosis.json; returns what it wrote."""
    rows = read_metrics(run_dir / METRICS)
    findings = diagnose(rows, thresholds)
    phases = split_phases(rows)
    plots = [plot_phase(p, prows, out / f"{p}.png", thresholds, findings) for p, prows in phases.items()]
    planning = {p: summary for p, prows in phases.items() if (summary := planning_summary(prows))}
    result = {"run": str(run_dir), "epochs": {p: len(r) for p, r in phases.items()},
              "findings": [f.to_dict() for f in findings], "plots": [str(p) for p in plots],
              "thresholds": asdict(thresholds), "planning": planning}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "diagnosis.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, allow_nan=False))
    tmp.replace(out / "diagnosis.json")
    return result


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    epochs = ", ".join(f"{p} {n} epochs" for p, n in result["epochs"].items())
    print(f"{result['run']}: {epochs}")
    print(format_findings([Finding(**f) for f in result["findings"]]))
    for phase, p in result.get("planning", {}).items():
        trace = ", ".join(f"{e}: {v:.0%}" for e, v in zip(p["epochs"], p["success"]))
        print(f"{phase} planning success by epoch: {trace}; best {p['best']['success']:.0%} at epoch "
              f"{p['best']['epoch']}, lowest val loss at epoch {p['lowest_val_epoch']}")
    print(f"plots: {', '.join(result['plots'])}")


def watch(run_dir: Path, out: Path, thresholds: Thresholds, interval: float, refreshes: int | None,
          as_json: bool) -> None:
    """Refresh whenever the log changed; `refreshes` bounds the polls (None: until Ctrl-C)."""
    seen: tuple[int, int] | None = None
    polls = 0
    while True:
        path = run_dir / METRICS
        stamp = (path.stat().st_mtime_ns, path.stat().st_size) if path.is_file() else None
        if stamp is None and polls == 0:
            print(f"waiting for {path}")
        if stamp is not None and stamp != seen:
            seen = stamp
            print(f"--- {time.strftime('%H:%M:%S')}")
            _print(report(run_dir, out, thresholds), as_json)
            sys.stdout.flush()
        polls += 1
        if refreshes is not None and polls >= refreshes:
            return
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.monitor", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="run folder holding metrics.jsonl")
    ap.add_argument("--out", type=Path, help="output folder (default RUN_DIR/monitor)")
    ap.add_argument("--watch", action="store_true", help="refresh as the run goes, until Ctrl-C")
    ap.add_argument("--interval", type=float, default=30.0, help="seconds between polls with --watch (default 30)")
    ap.add_argument("--refreshes", type=int, help="with --watch: stop after this many polls (default: never)")
    ap.add_argument("--json", action="store_true", help="print the diagnosis as JSON instead of text")
    ap.add_argument("--threshold", action="append", default=[], metavar="KEY=VALUE",
                    help="override a diagnosis threshold, e.g. plateau_epochs=20 (repeatable)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        thresholds = Thresholds.parse(args.threshold)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not math.isfinite(args.interval) or args.interval < 0:
        print(f"error: --interval {args.interval}: must be a finite number >= 0", file=sys.stderr)
        return 2
    out = args.out or args.run_dir / "monitor"
    if args.watch:
        try:
            watch(args.run_dir, out, thresholds, args.interval, args.refreshes, args.json)
        except KeyboardInterrupt:
            print(f"stopped; last plots and diagnosis in {out}")
        return 0
    if not (args.run_dir / METRICS).is_file():
        print(f"error: no {METRICS} in {args.run_dir}: pass a run folder written by `python -m training`",
              file=sys.stderr)
        return 2
    _print(report(args.run_dir, out, thresholds), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
