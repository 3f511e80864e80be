"""stable-worldmodel's own LeWM planner beside this project's, on the same weights, interleaved.

    python -m benchmarks.lewm_reference --prepare .peers/lewm     # once (git-ignored; or $LEWM_REFERENCE)
    python -m benchmarks.lewm_peer [--reference DIR] [--problems 3] [--seed 0] [--threads 1]
        [--cells ...] [--no-profile] [--out FILE.json] [--quick]
    python -m benchmarks.lewm_peer --table docs/benchmarks/lewm_peer.json

The peer is what a stable-worldmodel user plans LeWM with: its `solver.CEMSolver`
(le-wm's config/eval/solver/cem.yaml: 300 samples, top 30, 30 iterations,
var_scale 1; horizon 5, action blocks of 5) calling its `LeWM.get_cost`, both
imported at run time from the prepared reference (`benchmarks.lewm_reference`,
stable-worldmodel 0.1.1; nothing of it is in this repository). Its modules are
loaded into this process, so that both planners run on the same threads,
interleaved. The weights are built by the exactness check (`lewm_reference.run`:
a seeded LeWM of the published size - ViT-tiny/14 at 224 px, 6-layer predictor,
16 heads of 64, MLP 2048, 192-d - saved as `weights.pt` + `config.json` and
imported by `models.lewm`); the check's result is in the output, so both sides
are known to compute the same cost within 1e-4.

Problems (--goals): `reachable` (default), `benchmarks.problems.reachable_problem`
on the imported model (a smooth 224 px frame; the goal is the model's own
rollout of a random action sequence, so objective 0 is reachable), the goal
handed to stable-worldmodel as a latent through its own cache key
(`info["goal_emb"]`, which `get_cost` uses instead of encoding
`info["goal"]`); or `frame`: the goal is another smooth frame, which each
planner encodes inside its timed plan, as a client's goal image (with random
weights it is not reachable: the objective levels off above 0). Both
planners start from the same normalised pixels and encode them inside the
timed plan. Cells, each plans every problem, in a rotating order per problem:

* `swm_cem_30`: stable-worldmodel's CEMSolver + LeWM.get_cost, as shipped;
* `ours_cem_30`: this project's CEM at the same settings, all 30 iterations;
* `ours_default`: what this server plans with for the imported artifact on a
  CPU (`PlannerConfig.for_model`: the CPU preset with the artifact's
  recommendation, LeWM's paper CEM 300/30, up to 30 iterations, early stop);
* `ours_cem_300x10`: the paper's CEM with 10 iterations (all run);
* `ours_cpu_preset`: the CPU preset's own budget (CEM 100 samples, top 10, up
  to 15 iterations, early stop) with the artifact's objective: what the
  server would plan with if the import recorded only the objective.

One yardstick scores every plan: this project's rollout of the returned
actions, `last`-step objective (the mean squared distance to the goal
embedding; le-wm's cost is the same sum over the 192 dimensions, recorded
beside it as `swm_objective` / 192 for stable-worldmodel's plans: the two must
agree). Time per plan is wall and process CPU seconds; medians over problems;
the ratio is swm's median over each cell's. Where the time goes: analytic
FLOPs of one sample's rollout as each side runs it (`models.lewm.flops`), and
a torch profiler summary of one 300-sample iteration each (`--no-profile`
skips it). --quick: the small LeWM, 8 samples x 2 iterations, one problem.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from benchmarks import harness, lewm_reference
from benchmarks.problems import reachable_problem, smooth_frames
from models import Latent, load_model
from models.lewm.flops import encoder_flops, rollout_flops
from planning import PlannerConfig, objective, plan

HORIZON, SAMPLES, TOPK, STEPS = 5, 300, 30, 30  # le-wm config/eval/solver/cem.yaml, plan_config horizon 5
QUICK_BUDGET = (8, 2, 2)  # samples, top-k, iterations
CELLS = ("swm_cem_30", "ours_cem_30", "ours_default", "ours_cem_300x10", "ours_cpu_preset")
SOLVER_FILES = ("stable_worldmodel/solver/cem.py", "stable_worldmodel/protocols.py")


# The reference planner -------------------------------------------------------------
def find_planner_reference(path: str | Path | None) -> Path | None:
    """A prepared reference (`lewm_reference.find_reference`) that also holds stable-worldmodel's
    solvers and their logger (prepared by this version of `--prepare`)."""
    ref = lewm_reference.find_reference(path)
    if ref is None or not all((ref / "swm" / f).is_file() for f in SOLVER_FILES):
        return None
    return ref if (ref / "site" / "loguru").is_dir() else None


def import_solvers(reference: Path) -> types.ModuleType:
    """`stable_worldmodel.solver` from the reference, with the package namespace registered
    without running its `__init__` (which imports its environments and datasets)."""
    pkg_dir = reference / "swm" / "stable_worldmodel"
    pkg = sys.modules.get("stable_worldmodel")
    if pkg is None:
        pkg = types.ModuleType("stable_worldmodel")
        pkg.__path__ = [str(pkg_dir)]
        sys.modules["stable_worldmodel"] = pkg
    elif str(pkg_dir) not in list(getattr(pkg, "__path__", [])):
        raise RuntimeError(f"another stable_worldmodel is already imported ({pkg.__path__}); run in a fresh process")
    if str(reference / "site") not in sys.path:
        sys.path.append(str(reference / "site"))  # loguru; after this interpreter's packages
    return importlib.import_module("stable_worldmodel.solver")


def reference_model(reference: Path, folder: Path) -> torch.nn.Module:
    """stable-worldmodel's LeWM with the weights the exactness check saved in `folder`."""
    model = lewm_reference.reference_model(reference, json.loads((folder / "config.json").read_text()))
    model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    return model.eval().requires_grad_(False)


def reference_info(pixels: torch.Tensor, z_goal: Latent, goal: torch.Tensor | None,
                   action_dim: int) -> dict[str, torch.Tensor]:
    """The info dict its solver expands per sample, as a stable-worldmodel policy builds it:
    pixels (1, 1, 3, S, S) (batch, history), the action history (1, 1, A) (zeros: a first
    step; its rollout replaces it) and the goal frame, which `get_cost` encodes; with no goal
    frame (a reachable goal is a latent), the goal embedding (1, 1, E) under the key
    `get_cost` caches it in, and "goal", which it then only asserts present, is the observation."""
    info = {"pixels": pixels[:, None], "action": pixels.new_zeros(1, 1, action_dim)}
    if goal is not None:
        return {**info, "goal": goal[:, None]}
    return {**info, "goal": pixels[:, None], "goal_emb": z_goal.visual.clone()}


def swm_plan(solvers: types.ModuleType, ref: torch.nn.Module, pixels: torch.Tensor, z_goal: Latent,
             goal: torch.Tensor | None, frameskip: int, raw_dim: int, budget: tuple[int, int, int],
             seed: int) -> tuple[torch.Tensor, float, float]:
    """One cold plan with its CEMSolver: (actions (H, A) normalised, wall s, process CPU s)."""
    import gymnasium as gym

    samples, topk, steps = budget
    t0, c0 = time.perf_counter(), time.process_time()
    solver = solvers.CEMSolver(model=ref, num_samples=samples, topk=topk, n_steps=steps, var_scale=1.0,
                               device="cpu", seed=seed)
    space = gym.spaces.Box(low=-np.inf, high=np.inf, shape=(1, raw_dim), dtype=np.float32)  # CEM never clips
    solver.configure(action_space=space, n_envs=1, config=types.SimpleNamespace(
        horizon=HORIZON, action_block=frameskip, receding_horizon=HORIZON, history_len=1, warm_start=False))
    with contextlib.redirect_stdout(sys.stderr):  # it prints each solve's time
        out = solver.solve(reference_info(pixels, z_goal, goal, frameskip * raw_dim))
    return out["actions"][0], time.perf_counter() - t0, time.process_time() - c0


def swm_objective(ref: torch.nn.Module, pixels: torch.Tensor, z_goal: Latent, goal: torch.Tensor | None,
                  actions: torch.Tensor) -> float:
    """Its own cost of (H, A) actions (`get_cost`, a sum over dimensions) / embed dim."""
    info = {k: v[:, None] for k, v in reference_info(pixels, z_goal, goal, actions.shape[-1]).items()}  # 1 sample
    with torch.inference_mode():
        return float(ref.get_cost(info, actions[None, None].clone())[0, 0]) / z_goal.visual.shape[-1]


# The comparison ----------------------------------------------------------------------
def our_configs(model: Any, quick: bool) -> dict[str, PlannerConfig]:
    default = harness.planner(model, "cpu")
    cfgs = {"ours_cem_30": harness.planner(default, **harness.budget(SAMPLES, STEPS, elites=TOPK,
                                                                      min_iterations=STEPS)),
            "ours_default": default,
            "ours_cem_300x10": harness.planner(default, **harness.budget(SAMPLES, 10, elites=TOPK, min_iterations=10)),
            "ours_cpu_preset": harness.planner(PlannerConfig.cpu_preset(), method="cem", horizon=HORIZON,
                                               objective=default.objective, alpha=default.alpha)}
    if quick:
        s, k, n = QUICK_BUDGET
        cfgs = {name: harness.planner(c, **harness.budget(s, n, elites=k, min_iterations=min(c.min_iterations, n)))
                for name, c in cfgs.items()}
    return cfgs


def final_objective(model: Any, z_obs: Latent, z_goal: Latent, actions: torch.Tensor) -> float:
    """The yardstick: `last` (alpha 0) on this project's rollout of (H, A) normalised actions."""
    with torch.inference_mode():
        return float(objective(model.rollout(z_obs, actions[None]), z_goal, "last", 0.0)[0])


def make_problems(model: Any, n: int, seed: int, goals: str) -> list[tuple[torch.Tensor, torch.Tensor | None, Latent]]:
    """(pixels (1, 3, S, S), goal pixels or None, goal latent) per problem. "reachable": the goal is
    the model's rollout of a random action sequence (a latent; objective 0 is reachable);
    "frame": the goal is another frame, encoded by each planner as a client's goal image is."""
    if goals == "reachable":
        prob = reachable_problem(model, n, HORIZON, seed)
        return [(prob.pixels[i:i + 1], None, prob.z_goal.index(torch.tensor([i]))) for i in range(n)]
    size = model.config.image_size
    with torch.inference_mode():
        obs, goal = (model.preprocess(torch.from_numpy(smooth_frames(n, size, s))) for s in (seed, seed + 1))
        z_goal = model.encode(goal)
    return [(obs[i:i + 1], goal[i:i + 1], z_goal.index(torch.tensor([i]))) for i in range(n)]


def compare(model: Any, ref: torch.nn.Module, solvers: types.ModuleType, problems: int, seed: int,
            cells: tuple[str, ...], quick: bool, goals: str = "reachable") -> Iterator[dict[str, Any]]:
    """Rows of (cell, problem), as each plan ends: wall and CPU seconds per plan, final objective,
    iterations."""
    c = model.config
    cfgs = our_configs(model, quick)
    budget = QUICK_BUDGET if quick else (SAMPLES, TOPK, STEPS)
    for i, (pixels, goal, z_goal) in enumerate(make_problems(model, problems, seed, goals)):
        with torch.inference_mode():
            z_obs = model.encode(pixels)  # for the yardstick; each plan encodes again, timed
        order = cells[i % len(cells):] + cells[:i % len(cells)]  # rotate: no cell always runs first
        for cell in order:
            s = seed * 1000 + i
            row: dict[str, Any] = {"cell": cell, "problem": i, "seed": s, "goals": goals}
            if cell == "swm_cem_30":
                actions, dt, cpu = swm_plan(solvers, ref, pixels, z_goal, goal, c.frameskip, c.raw_action_dim, budget,
                                            s)
                row.update(iterations=budget[2], rollouts=budget[0] * budget[2],
                           swm_objective=swm_objective(ref, pixels, z_goal, goal, actions))
            else:
                t0, c0 = time.perf_counter(), time.process_time()
                with torch.inference_mode():
                    target = z_goal if goal is None else model.encode(goal)
                    (res,) = plan(model, model.encode(pixels), target, cfgs[cell], seeds=[s])
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
                actions = res.actions
                row.update(iterations=res.iterations, rollouts=int(res.rollouts), stop=res.stop_reason,
                           loss_trace=[round(x, 6) for x in res.loss_trace])
            row.update(seconds=round(dt, 4), cpu_seconds=round(cpu, 4),
                       objective=final_objective(model, z_obs, z_goal, actions),
                       load_average_1m=round(os.getloadavg()[0], 2))
            yield row


# Where the time goes ---------------------------------------------------------------------
def _profile(fn: Any, top: int = 8) -> dict[str, Any]:
    """Run `fn` under the torch profiler: total self CPU time and the ops that take most of it."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: -e.self_cpu_time_total)
    return {"self_cpu_ms": round(total / 1000, 1),
            "top_ops": [{"op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1000, 1),
                         "share": round(e.self_cpu_time_total / total, 3)} for e in events[:top]]}


def profile_iteration(model: Any, ref: torch.nn.Module, quick: bool, seed: int) -> dict[str, Any]:
    """One 300-sample iteration each, on the first problem, after one warm-up: stable-worldmodel's
    `get_cost` with the observation and goal already encoded (what its CEM calls every
    iteration after the first), and one iteration of this project's CEM (`plan` with
    max_iterations 1: sampling, rollout, objective, elite refit)."""
    samples = QUICK_BUDGET[0] if quick else SAMPLES
    prob = reachable_problem(model, 1, HORIZON, seed)
    z_goal = prob.z_goal
    g = torch.Generator().manual_seed(seed)
    candidates = torch.randn(1, samples, HORIZON, model.config.action_dim, generator=g)
    info = {k: v[:, None].expand(1, samples, *v.shape[1:])
            for k, v in reference_info(prob.pixels, z_goal, None, model.config.action_dim).items()}
    one = harness.planner(our_configs(model, quick)["ours_cem_30"],
                          **harness.budget(samples, 1, elites=max(1, samples // 10), min_iterations=1))
    with torch.inference_mode():
        z_obs = model.encode(prob.pixels)
        ref.get_cost(info, candidates.clone())  # encodes and caches the observation
        plan(model, z_obs, z_goal, one, seeds=[seed])
        out = {"swm_get_cost": _profile(lambda: ref.get_cost(info, candidates.clone())),
               "ours_iteration": _profile(lambda: plan(model, z_obs, z_goal, one, seeds=[seed]))}
    out["samples"] = samples
    return out


def flops(model: Any) -> dict[str, float]:
    """GFLOPs of one sample's rollout over the horizon as each side runs it, and of one encoding."""
    c = model.config
    return {"swm_rollout": rollout_flops(c, HORIZON, "reference").total / 1e9,
            "ours_rollout": rollout_flops(c, HORIZON, "cached").total / 1e9, "encoding": encoder_flops(c) / 1e9}


def summarize(rows: list[dict[str, Any]], ref_cell: str = "swm_cem_30") -> dict[str, Any]:
    cells: dict[str, Any] = {}
    for cell in dict.fromkeys(r["cell"] for r in rows):
        rs = [r for r in rows if r["cell"] == cell]
        cells[cell] = {"median_seconds": statistics.median(r["seconds"] for r in rs),
                       "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
                       "median_objective": statistics.median(r["objective"] for r in rs),
                       "mean_iterations": statistics.fmean(r["iterations"] for r in rs), "problems": len(rs)}
    by_problem = {(r["cell"], r["problem"]): r["objective"] for r in rows}
    if ref_cell in cells:
        r = cells[ref_cell]
        for cell, s in cells.items():
            s["speedup"] = r["median_seconds"] / s["median_seconds"]
            s["cpu_speedup"] = r["median_cpu_seconds"] / s["median_cpu_seconds"]
            s["problems_at_or_below_swm"] = sum(by_problem[(cell, p)] <= by_problem[(ref_cell, p)] * (1 + 1e-6)
                                                for p in {x["problem"] for x in rows})
    agree = [abs(r["swm_objective"] - r["objective"]) / max(abs(r["objective"]), 1e-12)
             for r in rows if "swm_objective" in r]
    out: dict[str, Any] = {"cells": cells, "reference": ref_cell,
                           "objective_agreement_max_rel": max(agree) if agree else None}
    if "ours_default" in cells and ref_cell in cells:
        d, r = cells["ours_default"], cells[ref_cell]
        out["target"] = {"speedup": d["speedup"], "cpu_speedup": d["cpu_speedup"],
                         "ours_median_objective": d["median_objective"], "swm_median_objective": r["median_objective"],
                         "met": d["speedup"] >= 5 and d["median_objective"] <= r["median_objective"]}
    if ref_cell in cells:  # every cell that meets the target: 5x less wall time at an equal or lower median objective
        out["cells_meeting_target"] = [c for c, s in cells.items() if c != ref_cell and s["speedup"] >= 5
                                       and s["median_objective"] <= cells[ref_cell]["median_objective"]]
    return out


def table(result: dict[str, Any]) -> str:
    """A markdown table of a result's cells."""
    s = result["summary"]
    out = ["| cell | median CPU s / plan | median wall s / plan | x faster than `swm_cem_30` (CPU; wall) "
           "| median final objective | problems at or below swm | mean iterations |", "|---|---|---|---|---|---|---|"]
    for cell, c in s["cells"].items():
        out.append(f"| `{cell}` | {c['median_cpu_seconds']:.2f} | {c['median_seconds']:.2f} "
                   f"| {c.get('cpu_speedup', float('nan')):.1f}; {c.get('speedup', float('nan')):.1f} "
                   f"| {c['median_objective']:.4g} | {c.get('problems_at_or_below_swm', '-')}/{c['problems']} "
                   f"| {c['mean_iterations']:.1f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser("lewm_peer", __doc__, model=False)
    ap.add_argument("--reference", help="a folder prepared by `python -m benchmarks.lewm_reference --prepare` "
                                        "(default: $LEWM_REFERENCE, .peers/lewm)")
    ap.add_argument("--problems", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--goals", choices=("reachable", "frame"), default="reachable",
                    help="reachable: a latent the model reaches (objective 0 exists); frame: another goal frame")
    ap.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
    ap.add_argument("--no-profile", action="store_true", help="skip the profiler summary of one iteration each")
    ap.add_argument("--table", type=Path, help="print a markdown table of this result file and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    reference = find_planner_reference(args.reference)
    if reference is None:
        print("no prepared LeWM reference with stable-worldmodel's solvers: run `python -m benchmarks.lewm_reference "
              "--prepare .peers/lewm` (or set $LEWM_REFERENCE)", file=sys.stderr)
        return 2
    result = harness.Result("lewm_peer", args)
    size = "small" if args.quick else "published"
    problems = 1 if args.quick else args.problems
    with tempfile.TemporaryDirectory(prefix="lewm_peer_") as tmp:
        exact = lewm_reference.run(reference, size, args.seed, workdir=Path(tmp))
        if not exact["ok"]:
            raise SystemExit(f"the import does not match the reference: {json.dumps(exact['checks'])}")
        model = load_model(Path(tmp) / "lewm.pt", device="cpu")
        ref = reference_model(reference, Path(tmp))
    solvers = import_solvers(reference)
    for row in compare(model, ref, solvers, problems, args.seed, tuple(args.cells), args.quick, args.goals):
        result.add(row)
    rows = result.rows
    summary = {**summarize(rows), "goals": args.goals, "size": size, "problems": problems,
               "parameters": model.num_parameters(),
               "gflops_per_sample": flops(model),
               "exactness": {k: exact[k] for k in ("ok", "checks", "tolerance", "reference")},
               "configs": {k: v.to_dict() for k, v in our_configs(model, args.quick).items()},
               "swm_solver": {"class": "stable_worldmodel.solver.CEMSolver", "num_samples": SAMPLES, "topk": TOPK,
                              "n_steps": STEPS, "var_scale": 1.0, "horizon": HORIZON,
                              "action_block": model.config.frameskip}
               if not args.quick else {"budget": QUICK_BUDGET}}
    if not args.no_profile:
        summary["profile_one_iteration"] = profile_iteration(model, ref, args.quick, args.seed)
    return result.finish(summary)


if __name__ == "__main__":
    sys.exit(main())
