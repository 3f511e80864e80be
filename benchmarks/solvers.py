"""Success per compute: every solver in closed loop on the wall task, at several budgets.

    python -m benchmarks.solvers [--goals near far] [--episodes 20] [--cells cem_paper icem_100x15 ...]
                                 [--out FILE.json] [--quick]
    python -m benchmarks.solvers --report FILE ... [--plot PNG]   # a markdown table (and plot) of results

Each cell is a planner config (a method and a budget) run through the real
planner (`planning.plan`, in-process, one torch thread) on the shipped wall
model (models/default/wall.pt) in the same closed loop as
`client_examples.closed_loop` (`envs.episodes` over `wm_client.ControlLoop`,
planning in-process with `server.local.LocalClient`): plan, execute one
model step, replan warm (iCEM also carries its kept elites), until success
or the step budget. Reported per cell: success rate, mean model steps, plan
latency p50/p95 (LocalClient's `timing_ms.total`: encode + plan + conversion
to env units; a cold plan also encodes its goal), mean iterations, stop
reasons, and analytic GFLOPs per plan: forward
rollouts x `models.flops.rollout_flops(..., "cached")`, plus backward-pass
rollouts (gradient solvers, out-of-place rollout, "recompute") x 3 (forward +
a backward of about twice its cost), plus one encoder pass for the observation.

One row per cell; --out is rewritten after every cell (a long run leaves
what it measured). --report reads results (and the JSON-lines files of
earlier runs in docs/benchmarks/). --quick: 1 episode, tiny budgets, for the test.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from envs.episodes import wall_episodes
from envs.tasks import WALL_BUDGETS as BUDGETS
from models import WorldModel, load_model
from models.flops import encoder_flops, rollout_flops
from planning import PlannerConfig
from models.artifact import model_identity
from planning.subgoals import SubgoalGraph
from server.engine import load_subgoals
from server.local import LocalClient

# name -> overrides of the model's paper-settings config (horizon 5, the model's objective and alpha).
# Every cell names its early-stop rule: these are the settings the published numbers were measured with.
_OLD_RULE = {"min_improvement": 1e-3}  # the default before the looser rule (docs/planning.md, early stopping)
_SMALL = {"min_iterations": 4, "patience": 3, **_OLD_RULE}
_budget = harness.budget
CELLS: dict[str, dict[str, Any]] = {
    "cem_paper": {"patience": 5, **_OLD_RULE},  # 300 samples x 30 iterations, top 30: the reference
    "cem_paper_es": {"min_improvement": 0.02, "patience": 3},
    "cem_paper_unbiased": {"cem": {"elite_std": "unbiased"}, "patience": 5, **_OLD_RULE},
    "cem_100x15": _budget(100, 15, **_SMALL),
    "cem_100x15_es": _budget(100, 15, min_iterations=4, patience=3, min_improvement=0.02),
    "cem_50x10": _budget(50, 10, elites=5, **_SMALL),
    "icem_100x15": _budget(100, 15, method="icem", **_SMALL),
    "icem_50x10": _budget(50, 10, elites=5, method="icem", **_SMALL),
    "icem_30x6": _budget(30, 6, elites=5, method="icem", min_iterations=3, patience=2, **_OLD_RULE),
    "mppi_100x15": _budget(100, 15, method="mppi", **_SMALL),
    "gradient_4x15": {"method": "gradient", "gradient": {"starts": 4}, "max_iterations": 15, **_SMALL},
    "icem_gradient_50x10": _budget(50, 10, elites=5, method="icem_gradient", gradient={"starts": 1},
                                   icem_gradient={"gradient_iterations": 3}, **_SMALL),
}
# Candidates for the server's CPU default (issue 24): the current rule (min 4, patience 3, 2%), and a smaller
# budget for warm-started replans (`warm_max_iterations`, _wN).
_RULE = {"min_iterations": 4, "patience": 3, "min_improvement": 0.02}
for _n, _i, _w in ((50, 10, 5), (50, 10, 3), (32, 8, 4), (50, 6, 3), (64, 10, 4)):
    CELLS[f"icem_{_n}x{_i}_w{_w}"] = _budget(_n, _i, elites=5, method="icem", warm_max_iterations=_w, **_RULE)
for _n, _i, _w in ((50, 10, 5), (50, 10, 3), (64, 10, 4), (100, 10, 4), (100, 8, 3)):
    CELLS[f"cem_{_n}x{_i}_w{_w}"] = _budget(_n, _i, elites=max(5, _n // 10), warm_max_iterations=_w, **_RULE)
for _i in (30, 50):  # the DINO-WM imports' candidates (benchmarks.dino_wm_peer), in closed loop
    CELLS[f"gradient_1x{_i}_lr03"] = {"method": "gradient", "gradient": {"starts": 1, "lr": 0.3}, "max_iterations": _i,
                                      **_RULE}
CELLS["cem_gradient_50x33_g30_lr03"] = _budget(50, 33, elites=5, method="cem_gradient", min_iterations=33,
                                              gradient={"starts": 1, "lr": 0.3},
                                              cem_gradient={"gradient_iterations": 30})
CELLS["cem_gradient_32x32_g30_lr03"] = _budget(32, 32, elites=3, method="cem_gradient", min_iterations=32,
                                              gradient={"starts": 1, "lr": 0.3},
                                              cem_gradient={"gradient_iterations": 30})
CELLS["icem_100x10_w4"] = _budget(100, 10, method="icem", warm_max_iterations=4, **_RULE)
DEFAULT_CELL = "default"  # what the server plans with for the model on a CPU (`PlannerConfig.for_model`)
QUICK = _budget(8, 2, elites=2, min_iterations=2, gradient={"starts": 1}, cem_gradient={"gradient_iterations": 1},
                icem_gradient={"gradient_iterations": 1})


def gflops(model: WorldModel, cfg: PlannerConfig, rollouts: int, grad_rollouts: int) -> float:
    """Analytic GFLOPs of one plan that scored ``rollouts`` forward and ``grad_rollouts`` backward sequences."""
    c = model.config
    fwd = rollout_flops(c, cfg.horizon, "cached").total
    grad = 3 * rollout_flops(c, cfg.horizon, "recompute").total
    return (rollouts * fwd + grad_rollouts * grad + encoder_flops(c)) / 1e9


def run_cell(model: WorldModel, name: str, cfg: PlannerConfig, goals: str, episodes: int, seed: int,
             graph: SubgoalGraph | None = None) -> dict[str, Any]:
    client = LocalClient(model, cfg, keep_replies=True, subgoals=graph)
    t0 = time.perf_counter()
    outcomes = list(wall_episodes(client, episodes, seed, goals))
    rec = client.replies or []
    ms = [r["timing_ms"]["total"] for r in rec]
    stops: dict[str, int] = {}
    for r in rec:
        stops[str(r["stop_reason"])] = stops.get(str(r["stop_reason"]), 0) + 1
    return {
        "cell": name, "method": cfg.method, "goals": goals + ("+subgoals" if cfg.subgoals else ""),
        "episodes": episodes, "seed": seed,
        "num_samples": getattr(cfg.solver(), "samples", None), "opt_steps": cfg.max_iterations,  # the table's keys
        "success_rate": sum(o.success for o in outcomes) / len(outcomes),
        "successes": sum(o.success for o in outcomes),
        "mean_steps": statistics.fmean(o.steps for o in outcomes),
        "plans": len(rec),
        "gflops_per_plan": statistics.fmean(gflops(model, cfg, r["rollouts"], r["grad_rollouts"]) for r in rec),
        "mean_iterations": statistics.fmean(r["iterations"] for r in rec),
        "mean_iterations_first": _mean([r["iterations"] for r in rec if not r["warm_start"]]),
        "mean_iterations_replans": _mean([r["iterations"] for r in rec if r["warm_start"]]),
        "plan_ms_p50_first": _median([r["timing_ms"]["total"] for r in rec if not r["warm_start"]]),
        "plan_ms_p50_replans": _median([r["timing_ms"]["total"] for r in rec if r["warm_start"]]),
        "plan_ms_p50": float(np.percentile(ms, 50)), "plan_ms_p95": float(np.percentile(ms, 95)),
        "stop_reasons": stops, "wall_s": round(time.perf_counter() - t0, 1),
        "load_average_1m": harness.load_average()[0],
        "config": {k: v for k, v in cfg.to_dict().items() if k in CELLS.get(name, {}) or k in (
            "objective", "alpha", "max_iterations", "warm_max_iterations", "subgoals", cfg.method)},
    }


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of closed-loop cells, cheapest first within each goal set."""
    out = ["| goals | cell | success | mean model steps | GFLOPs/plan | x fewer than cem_paper | mean iterations "
           "| plan p50 / p95 (ms) | stops | load |", "|---|---|---|---|---|---|---|---|---|---|"]
    for goals in ("near", "far", "far+subgoals"):
        cells = sorted((r for r in rows if r.get("goals") == goals), key=lambda r: r["gflops_per_plan"])
        ref = next((r["gflops_per_plan"] for r in cells if r["cell"] == "cem_paper"), None)
        for r in cells:
            ratio = f"{ref / r['gflops_per_plan']:.1f}" if ref else "-"
            stops = ", ".join(f"{k} {v}" for k, v in sorted(r["stop_reasons"].items()))
            out.append(f"| {goals} | `{r['cell']}` | {100 * r['success_rate']:.0f}% ({r['successes']}/{r['episodes']}) "
                       f"| {r.get('mean_steps', float('nan')):.2f} | {r['gflops_per_plan']:.2f} | {ratio} | {r['mean_iterations']:.1f} "
                       f"| {r['plan_ms_p50']:.0f} / {r['plan_ms_p95']:.0f} | {stops} | {r['load_average_1m']} |")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    methods = sorted({r["method"] for r in rows})
    colors = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(methods)}
    for ax, goals in zip(axes, ("near", "far")):
        cells = sorted((r for r in rows if r.get("goals") == goals), key=lambda r: r["gflops_per_plan"])
        for k, r in enumerate(cells):
            x, y = r["gflops_per_plan"], 100 * r["success_rate"]
            ax.scatter(x, y, s=36, color=colors[r["method"]], label=r["method"])
            ax.annotate(r["cell"].removeprefix(r["method"]).strip("_") or r["method"], (x, y), fontsize=7,
                        xytext=(4, 6 if k % 2 else -10), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("GFLOPs per plan (analytic)")
        ax.set_title(f"wall, {goals} goals (closed loop)")
        ax.grid(alpha=0.3)
    handles = {h.get_label(): h for ax in axes for h in ax.collections}
    axes[1].legend(handles.values(), handles.keys(), fontsize=8, loc="lower left", ncol=2)
    axes[0].set_ylabel("success rate (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser("solvers", __doc__)
    ap.add_argument("--goals", nargs="+", choices=sorted(BUDGETS), default=["near"])
    ap.add_argument("--cells", nargs="+", choices=sorted([*CELLS, DEFAULT_CELL]), default=sorted(CELLS))
    ap.add_argument("--subgoals", help="far goals plan with this subgoal graph ('auto': the model's shipped one, "
                    "models/default/wall.subgoals.pt), as `planner.subgoals: true` through a server with --subgoals")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", nargs="+", type=Path, help="print a markdown table of these results and exit")
    ap.add_argument("--plot", type=Path, help="with --report: also write the success-vs-GFLOP plot here")
    args = ap.parse_args(argv)
    if args.report:
        rows = [r for r in harness.read_rows(args.report) if "cell" in r]
        if args.plot:
            plot(rows, args.plot)
        print(table(rows))
        return 0
    path = harness.wall_model(args.model)
    result = harness.Result("solvers", args)
    model = load_model(path, device="cpu")
    base = harness.planner(model, "cuda")  # paper settings + the model's objective and alpha
    graph = None
    if args.subgoals:
        graph = load_subgoals(args.subgoals, path, model_identity(str(path)))
        if graph is None:
            raise SystemExit(f"--subgoals {args.subgoals}: no subgoal graph for {path}")
    for goals in args.goals:
        for name in args.cells:
            cfg = harness.planner(model, "cpu") if name == DEFAULT_CELL else harness.planner(base, **CELLS[name])
            if args.quick:
                cfg = harness.planner(cfg, **QUICK)
            use = graph if goals == "far" else None
            cfg = harness.planner(cfg, subgoals=use is not None)
            result.add(run_cell(model, name, cfg, goals, 1 if args.quick else args.episodes, args.seed, use))
    return result.finish({"model": str(path.relative_to(harness.ROOT) if path.is_relative_to(harness.ROOT) else path),
                          "success_rate": {f"{r['goals']}/{r['cell']}": r["success_rate"] for r in result.rows}})


if __name__ == "__main__":
    sys.exit(main())
