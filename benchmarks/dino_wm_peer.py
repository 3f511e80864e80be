"""DINO-WM's own `CEMPlanner` beside this project's planner, on the same weights, interleaved.

    python -m benchmarks.dino_wm_peer --dino-wm PATH [--problems 3] [--seed 0] [--threads 1]
        [--img-size 32] [--cells ...] [--out FILE.json] [--quick]
    python -m benchmarks.dino_wm_peer --table docs/benchmarks/dino_wm_peer.json

PATH is a checkout of DINO-WM's public repository (github.com/gaoyuezhou/dino_wm;
the published planner settings in `models/dino_wm/published.py` are from commit
0a9492f). Default: $DINO_WM, else `.peers/dino_wm` in this repository (git-ignored):

    git clone https://github.com/gaoyuezhou/dino_wm .peers/dino_wm
    # or, from a bare mirror:  mkdir -p .peers/dino_wm && git --git-dir=MIRROR archive HEAD | tar -x -C .peers/dino_wm
    pip install -e ".[peers]"          # einops, omegaconf, psutil: what its planner and model modules import

Its code is imported at run time from PATH (never copied here) and driven to
build a run the way its training code does: its `VWorldModel` with its
`DinoV2Encoder` (ViT-S/14), its `ViTPredictor`, its `ProprioceptiveEmbedding`
action and proprio encoders, seeded random weights, `concat_dim: 1`; the
checkpoint `checkpoints/model_latest.pth` holds what `train.py` saves when the
encoder is frozen and no decoder is trained (epoch, predictor, its AdamW
optimiser, action and proprio encoders), beside a `hydra.yaml` built from its
`conf/` files. `models.dino_wm` turns that run into an artifact of this
project. Then, on the same reachable problems (goal = the model's own rollout
of a known action sequence, `benchmarks.problems.reachable_problem`), each cell
plans every problem, the cells interleaved per problem in a rotating order:

* `dinowm_cem_30`, `dinowm_cem_10`: DINO-WM's `planning.cem.CEMPlanner` at its
  published settings (horizon 5, 300 samples, top 30, var_scale 1; 30
  iterations as conf/planner/cem.yaml and plan_pusht.yaml, 10 as plan_wall.yaml),
  objective `planning.objectives.create_objective_fn(alpha=1, base=2, mode="last")`;
* `ours_cem_30`, `ours_cem_10`: this project's CEM at the same settings, no early stop;
* `ours_default`: what this server plans with for the imported model
  (`PlannerConfig.for_model`: DINO-WM's published settings from the artifact, the
  default method and early stop);
* `ours_icem_50x10`: a cheaper method, iCEM 50 samples x 10 iterations, top 5, early stop.

Every plan's final objective is measured with one yardstick: `last`, alpha 1
on this project's rollout of the returned actions (DINO-WM's own objective of
its own plan is recorded beside it: the two must agree, which checks that both
planners see the same weights). Time per plan includes encoding the
observation (DINO-WM also encodes it once per sample per iteration: that is
its code). One torch thread; medians over problems; ratios are DINO-WM's
30-iteration median time over each cell's.

What the benchmark supplies to DINO-WM's code, and only here (each a few
lines in `benchmarks/dino_wm_run.py`, none of its logic replaced):
* `torch.hub.load("facebookresearch/dinov2", "dinov2_vits14")` returns a
  locally built ViT-S/14 with DINOv2's parameter names and seeded weights
  (`models.encoders.DinoV2Encoder` + `forward_features`); nothing is downloaded.
  Its state dict is the `--encoder-weights` file the importer reads, as the
  hub cache file would be.
* its `models/vit.py` puts the attention mask on "cuda" unconditionally: on a
  machine without CUDA that one `.to("cuda")` is redirected to the CPU while
  the predictor is built.
* `torchvision.transforms.Resize` (the VWorldModel's resize before DINOv2):
  when torchvision cannot be imported (PyPI's torchvision wheel is built
  against CUDA torch and fails to load beside a CPU torch), a stand-in that
  does what torchvision's Resize does to a square tensor (bilinear,
  antialiased).
* the goal: DINO-WM's planner encodes a goal image; here the goal is a latent
  (reachable), so its model is handed to the planner behind a proxy whose
  `encode_obs` encodes the goal frame as DINO-WM would, then returns the goal
  latent. The dataset transform is Normalize(0.5, 0.5) on frames already at
  `img_size` (what `default_transform` does to them).

Sizes: a DINO-WM-size plan (224 px, 196 patches, predictor 404 x 6, MLP 2048)
is hours on a CPU (docs/gpu.md), and even 112 px frames (49 patches) with a
2-block predictor took 380 s for one 10-iteration DINO-WM plan on this shared
machine; and this benchmark runs at `nice 15` beside a training run, with a
few percent of a core. So the defaults are a small model: 32 px frames
(DINO-WM resizes them to 28 px: 2 x 2 = 4 patches), a 1-block ViT-S/14
(width 384, 6 heads, patch 14, as DINOv2's) and a 2-block predictor of width
404, 2 heads x 32, MLP 256; `--img-size 64` (16 patches) or 112 (49) where
the machine has time. The analytic FLOP ratio of the two rollouts is about
the same at all three sizes (2.1-2.2x). The sizes, the per-sample FLOPs of both rollouts and the encoder's
share of DINO-WM's (which re-encodes per sample; about 7% at DINO-WM's real
size) are in the output. --quick: a
tiny model, 8 samples and 2 iterations, one problem: the code path, for the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import harness
from benchmarks.problems import reachable_problem, smooth_frames
from benchmarks.dino_wm_run import (QUICK_SIZES, DinoWMRun, LatentGoalWM, LossLog, Sizes, build_run, find_checkout,
                                    missing_deps)
from models import Latent, WorldModel, load_model
from models.flops import encoder_flops, rollout_flops
from models.dino_wm.importer import import_run, read_stats
from planning import PlannerConfig, objective, plan


HORIZON, SAMPLES, TOPK = 5, 300, 30  # DINO-WM's published CEM settings (conf/planner/cem.yaml)

# A cell is one planner at one budget, named by what it runs:
#   dinowm_cem_<I>                  DINO-WM's CEMPlanner, 300 samples, top 30, I iterations
#   ours_<method>_<N>x<I>[_g<G>][_lr<L>][_es]
#                                   this project's <method>: cem, icem, mppi (N samples, top N/10),
#                                   gradient (N starts), cem_gradient / icem_gradient (N samples, the last G
#                                   of the I iterations gradient steps); I iterations; Adam step L (gradient
#                                   phases; default 0.1); no early stop unless `_es` (the default rule)
#   ours_default                    what the server plans with for the imported artifact
#                                   (`PlannerConfig.for_model`: the device preset + the artifact's settings)
CELLS = ("dinowm_cem_30", "ours_cem_300x30", "dinowm_cem_10", "ours_cem_300x10", "ours_default",
         "ours_icem_50x10_es")
_GRADIENT = ("ours_gradient_4x10", "ours_gradient_1x20_lr0.3", "ours_gradient_1x30_lr0.3",
             "ours_gradient_1x50_lr0.3", "ours_cem_gradient_100x15_g10_lr0.3",
             "ours_cem_gradient_50x33_g30_lr0.3")
# --grid select: every solver over a grid of budgets, DINO-WM's planner at 10 and 30 iterations as references.
GRIDS: dict[str, tuple[str, ...]] = {
    "issue": CELLS,
    "select": ("dinowm_cem_10", "dinowm_cem_30", "ours_cem_300x10", "ours_cem_300x30", "ours_cem_100x10",
               *(f"ours_icem_{n}x{i}" for n in (50, 100, 150, 300) for i in (3, 5, 10)),
               "ours_mppi_100x10", "ours_mppi_300x10", *_GRADIENT, "ours_default"),
    # the cells that decide (a 64 px run's DINO-WM plan at 30 iterations is minutes here)
    "decide": ("dinowm_cem_10", "ours_cem_300x10", "ours_cem_100x10", "ours_icem_150x10", "ours_mppi_100x10",
               *_GRADIENT, "ours_default"),
}
_CELL = re.compile(r"^(?:dinowm_cem_(?P<dsteps>\d+)|ours_default|ours_(?P<method>cem|icem|mppi|gradient|cem_gradient|"
                   r"icem_gradient)_(?P<n>\d+)x(?P<steps>\d+)(?:_g(?P<g>\d+))?(?:_lr(?P<lr>[0-9.]+))?(?P<es>_es)?)$")


def check_cell(name: str) -> str:
    """`name` if it is a cell name (argparse type); else ValueError saying the grammar."""
    if not _CELL.match(name):
        raise ValueError(f"{name!r}: a cell is dinowm_cem_<I>, ours_default or "
                         "ours_<cem|icem|mppi|gradient|cem_gradient|icem_gradient>_<N>x<I>[_g<G>][_lr<L>][_es]")
    return name


def dino_wm_steps(cell: str) -> int:
    """Iterations of a `dinowm_cem_<I>` cell."""
    return int(_CELL.match(cell)["dsteps"])  # type: ignore[index]


# The comparison ----------------------------------------------------------------
def cell_config(cell: str, model: WorldModel, quick: bool = False) -> PlannerConfig:
    """This project's planner config for an `ours_*` cell: DINO-WM's objective (`last`, alpha 1),
    horizon 5, the cell's method and budget."""
    m = _CELL.match(check_cell(cell))
    if cell == "ours_default":
        cfg = harness.planner(model, "cpu")
    else:
        method, n, steps, es = m["method"], int(m["n"]), int(m["steps"]), bool(m["es"])
        paper = harness.planner(None, objective="last", alpha=1.0)
        more: dict[str, Any] = {} if es else {"min_iterations": steps}
        grad = {"starts": n if method == "gradient" else 1, **({"lr": float(m["lr"])} if m["lr"] else {})}
        if m["g"]:
            more[method] = {"gradient_iterations": int(m["g"])}
        if method == "gradient":
            cfg = harness.planner(paper, method="gradient", max_iterations=steps, gradient=grad, **more)
        else:
            sampler = method.removesuffix("_gradient")
            elites = TOPK if n == SAMPLES else max(2, n // 10)
            budget = harness.budget(n, steps, elites=elites)
            cfg = harness.planner(paper, method=method, **budget, gradient=grad, **more)
            assert cfg.solver(sampler).samples == n
    if quick:
        cfg = harness.planner(cfg, **harness.budget(8, 2, elites=2, min_iterations=min(cfg.min_iterations, 2)),
                              gradient={"starts": 2}, cem_gradient={"gradient_iterations": 1},
                              icem_gradient={"gradient_iterations": 1})
    return cfg


def our_configs(model: WorldModel, quick: bool, cells: tuple[str, ...] = CELLS) -> dict[str, PlannerConfig]:
    return {c: cell_config(c, model, quick) for c in cells if not c.startswith("dinowm_")}


def _final_objective(model: WorldModel, z_obs: Latent, z_goal: Latent, actions: torch.Tensor) -> float:
    """The yardstick: `last`, alpha 1, this project's rollout of (1, H, A) normalised actions."""
    with torch.inference_mode():
        return float(objective(model.rollout(z_obs, actions), z_goal, "last", 1.0)[0])


def run_dino_wm(run: DinoWMRun, goal_wm: LatentGoalWM, prep: Any, frame: np.ndarray, proprio: np.ndarray,
                z_goal: Latent, steps: int, samples: int, topk: int, seed: int) -> tuple[torch.Tensor, float, float, LossLog]:
    log = LossLog()
    planner = run.cem.CEMPlanner(horizon=HORIZON, topk=topk, num_samples=samples, var_scale=1, opt_steps=steps,
                                 eval_every=1, wm=goal_wm, action_dim=run.wm.action_encoder.in_chans,
                                 objective_fn=run.objectives.create_objective_fn(alpha=1, base=2, mode="last"),
                                 preprocessor=prep, evaluator=None, wandb_run=log)
    obs = {"visual": frame[None, None], "proprio": proprio[None, None]}  # (1, 1, S, S, 3) uint8, (1, 1, D)
    goal_wm.goal = {"visual": z_goal.visual[:, None], "proprio": z_goal.proprio[:, None]}  # (1, 1, P, 384), (1, 1, E)
    torch.manual_seed(seed)  # its samples come from the global generator
    t0, c0 = time.perf_counter(), time.process_time()
    mu, _ = planner.plan(obs_0=obs, obs_g=obs)
    return mu.detach(), time.perf_counter() - t0, time.process_time() - c0, log


def dino_wm_objective(run: DinoWMRun, prep: Any, frame: np.ndarray, proprio: np.ndarray, z_goal: Latent,
                      actions: torch.Tensor) -> float:
    """DINO-WM's own objective of its own rollout of `actions` (agreement check)."""
    obs = prep.transform_obs({"visual": frame[None, None], "proprio": proprio[None, None]})
    with torch.no_grad():
        z_obses, _ = run.wm.rollout(obs_0=obs, act=actions)
        fn = run.objectives.create_objective_fn(alpha=1, base=2, mode="last")
        return float(fn(z_obses, {"visual": z_goal.visual[:, None], "proprio": z_goal.proprio[:, None]})[0])


def compare(run: DinoWMRun, model: WorldModel, problems: int, seed: int, cells: tuple[str, ...],
            quick: bool, only: list[int] | None = None, goals: str = "reachable") -> list[dict[str, Any]]:
    """Rows of (cell, problem): wall and process CPU seconds per plan, final objective.
    only: plan these problem indices (of the `problems` drawn from `seed`) only. goals: "reachable"
    (the model's rollout of known actions: an objective of 0 exists) or "frame" (another frame's
    latent, as a client's goal image: the objective measures how near a plan gets)."""
    prob = reachable_problem(model, problems, HORIZON, seed)
    if goals == "frame":
        g = torch.Generator().manual_seed(seed + 1)
        frames = torch.from_numpy(smooth_frames(problems, model.config.image_size, seed + 1))
        proprio = torch.randn(problems, model.config.proprio_dim, generator=g)
        with torch.inference_mode():
            prob.z_goal = model.encode_observation(frames, proprio)
    stats = model.stats
    prep = run.preprocessor.Preprocessor(action_mean=stats.action_mean, action_std=stats.action_std,
                                         state_mean=None, state_std=None, proprio_mean=stats.proprio_mean,
                                         proprio_std=stats.proprio_std, transform=lambda x: (x - 0.5) / 0.5)
    goal_wm = LatentGoalWM(run.wm)
    cfgs = our_configs(model, quick, cells)
    samples, topk = (8, 2) if quick else (SAMPLES, TOPK)
    rows = []
    for i in (range(problems) if only is None else only):
        frame, proprio = prob.frames[i].numpy(), prob.proprio[i].numpy()
        z_goal = prob.z_goal.index(torch.tensor([i]))
        order = cells[i % len(cells):] + cells[:i % len(cells)]  # rotate: no cell always runs first
        for cell in order:
            s = seed * 1000 + i
            row: dict[str, Any] = {"cell": cell, "problem": i, "seed": s}
            if cell.startswith("dinowm_"):
                steps = 2 if quick else dino_wm_steps(cell)
                mu, dt, cpu, log = run_dino_wm(run, goal_wm, prep, frame, proprio, z_goal, steps, samples, topk, s)
                with torch.inference_mode():
                    z_obs = model.encode_observation(prob.frames[i:i + 1], prob.proprio[i:i + 1])
                row.update(seconds=dt, cpu_seconds=cpu, iterations=steps, rollouts=steps * samples,
                           objective=_final_objective(model, z_obs, z_goal, mu),
                           dino_wm_objective=dino_wm_objective(run, prep, frame, proprio, z_goal, mu),
                           loss_trace=log.losses)
            else:
                cfg = cfgs[cell]
                t0, c0 = time.perf_counter(), time.process_time()
                with torch.inference_mode():
                    z_obs = model.encode_observation(prob.frames[i:i + 1], prob.proprio[i:i + 1])
                    (res,) = plan(model, z_obs, z_goal, cfg, seeds=[s])
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
                row.update(seconds=dt, cpu_seconds=cpu, iterations=res.iterations, rollouts=int(res.rollouts),
                           grad_rollouts=int(res.grad_rollouts), stop=res.stop_reason,
                           objective=_final_objective(model, z_obs, z_goal, res.actions[None]),
                           dino_wm_objective=dino_wm_objective(run, prep, frame, proprio, z_goal, res.actions[None]),
                           planner_loss=float(res.loss), loss_trace=list(res.loss_trace))
            row["load_average_1m"] = round(os.getloadavg()[0], 2)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "loss_trace"}), file=sys.stderr, flush=True)
    return rows


def flops_per_sample(model: WorldModel) -> dict[str, float]:
    """Analytic FLOPs of one sample's rollout: DINO-WM's (re-encoding included), ours (cached), ours with a
    backward pass (the gradient solver's: the out-of-place rollout, x3 for forward + backward), one encoding."""
    c = model.config
    return {"dinowm": rollout_flops(c, HORIZON, "dino_wm").total, "ours": rollout_flops(c, HORIZON, "cached").total,
            "ours_grad": 3 * rollout_flops(c, HORIZON, "recompute").total, "encoder": encoder_flops(c)}


def _score(row: dict[str, Any]) -> float:
    """A plan's final objective, DINO-WM's own (its objective function on its rollout of the returned
    actions) where recorded; this project's rollout with the same function otherwise (they agree)."""
    return row.get("dino_wm_objective", row["objective"])


def summarize(rows: list[dict[str, Any]], per_sample: dict[str, float],
              reference: str | None = None) -> dict[str, Any]:
    """Medians per cell over problems; speedups from process CPU seconds (`cpu_seconds`: what each
    plan computed, whatever share of the core the machine gave it) and from wall seconds, against
    `reference` (default: DINO-WM at 30 iterations, else at 10, else the first cell). `selected`: for
    each DINO-WM cell, the cheapest of ours (the server's default excluded) whose median objective is
    at or below that cell's and that is at or below it on at least half of the problems."""
    cells: dict[str, Any] = {}
    problems = sorted({r["problem"] for r in rows})
    for cell in dict.fromkeys(r["cell"] for r in rows):
        rs = [r for r in rows if r["cell"] == cell]
        peer = "dinowm" if cell.startswith("dinowm") else "ours"
        flops = [r["rollouts"] * per_sample[peer] + r.get("grad_rollouts", 0) * per_sample.get("ours_grad", 0.0)
                 for r in rs]
        cells[cell] = {"median_seconds": statistics.median(r["seconds"] for r in rs),
                       "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
                       "median_objective": statistics.median(_score(r) for r in rs),
                       "mean_objective": statistics.fmean(_score(r) for r in rs),
                       "mean_iterations": statistics.fmean(r["iterations"] for r in rs),
                       "gflops_per_plan": statistics.fmean(flops) / 1e9,
                       "problems": len(rs)}
    dino = [c for c in cells if c.startswith("dinowm_")]
    ref = reference or next((c for c in ("dinowm_cem_30", "dinowm_cem_10") if c in cells), next(iter(cells)))
    by_problem = {(r["cell"], r["problem"]): _score(r) for r in rows}

    def at_or_below(cell: str, other: str) -> int:
        return sum(by_problem[(cell, p)] <= by_problem[(other, p)] * (1 + 1e-6) for p in problems
                   if (cell, p) in by_problem and (other, p) in by_problem)

    for cell, s in cells.items():
        s["speedup_vs_" + ref] = cells[ref]["median_cpu_seconds"] / s["median_cpu_seconds"]
        s["wall_speedup_vs_" + ref] = cells[ref]["median_seconds"] / s["median_seconds"]
        s["problems_at_or_below_" + ref] = at_or_below(cell, ref)
    selected: dict[str, Any] = {}
    for d in dino:
        ok = [c for c in cells if c.startswith("ours_") and c != "ours_default"
              and cells[c]["median_objective"] <= cells[d]["median_objective"]
              and 2 * at_or_below(c, d) >= cells[c]["problems"]]
        best = min(ok, key=lambda c: cells[c]["median_cpu_seconds"], default=None)
        selected[d] = None if best is None else {
            "cell": best, "speedup": cells[d]["median_cpu_seconds"] / cells[best]["median_cpu_seconds"],
            "wall_speedup": cells[d]["median_seconds"] / cells[best]["median_seconds"],
            "median_objective": cells[best]["median_objective"], "reference_objective": cells[d]["median_objective"],
            "problems_at_or_below": at_or_below(best, d), "problems": cells[best]["problems"]}
    agree = [abs(r["dino_wm_objective"] - r["objective"]) / max(abs(r["objective"]), 1e-12)
             for r in rows if "dino_wm_objective" in r]
    out: dict[str, Any] = {"cells": cells, "reference": ref, "selected": selected,
                           "objective_agreement_max_rel": max(agree) if agree else None,
                           "gflops_per_sample": {k: v / 1e9 for k, v in per_sample.items()},
                           "encoder_share_of_dinowm_sample": per_sample["encoder"] / per_sample["dinowm"]}
    if "ours_default" in cells and ref.startswith("dinowm_"):
        d, r = cells["ours_default"], cells[ref]
        out["target"] = {"reference": ref, "speedup": d["speedup_vs_" + ref], "wall_speedup": d["wall_speedup_vs_" + ref],
                         "default_median_objective": d["median_objective"],
                         "dinowm_median_objective": r["median_objective"],
                         "met": d["speedup_vs_" + ref] >= 10 and d["median_objective"] <= r["median_objective"]}
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """Median CPU seconds per plan against median final objective, one point per cell (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = result["summary"]["cells"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for cell, c in cells.items():
        kind = ("dinowm" if cell.startswith("dinowm") else "ours_composite" if "m_gradient_" in cell
                else "_".join(cell.split("_")[:2]))
        style = {"dinowm": ("k", "s"), "ours_cem": ("C0", "o"), "ours_icem": ("C1", "o"), "ours_mppi": ("C2", "^"),
                 "ours_gradient": ("C3", "v"), "ours_composite": ("C4", "D"),
                 "ours_default": ("C5", "*")}.get(kind, ("C6", "o"))
        ax.scatter(c["median_cpu_seconds"], c["median_objective"], color=style[0], marker=style[1], s=40)
        ax.annotate(cell.replace("ours_", ""), (c["median_cpu_seconds"], c["median_objective"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    sizes = result["summary"].get("sizes", {})
    ax.set_xlabel("median CPU seconds per plan (1 thread)")
    ax.set_ylabel("median final objective (DINO-WM's, lower is better)")
    ax.set_title(f"Planners on one DINO-WM run ({sizes.get('img_size', '?')} px frames), "
                 f"{len(set(r['problem'] for r in result['rows']))} problems")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(result: dict[str, Any]) -> str:
    """A markdown table of a result's cells: median time, ratio, objectives, FLOPs."""
    s = result["summary"]
    ref = s["reference"]
    out = [f"| cell | median CPU s / plan | x less CPU than `{ref}` | median wall s (x) | median final objective "
           f"| at or below `{ref}` | mean iterations | GFLOPs / plan |", "|---|---|---|---|---|---|---|---|"]
    for cell, c in s["cells"].items():
        out.append(f"| `{cell}` | {c['median_cpu_seconds']:.2f} | {c['speedup_vs_' + ref]:.1f} "
                   f"| {c['median_seconds']:.1f} ({c['wall_speedup_vs_' + ref]:.1f}) "
                   f"| {c['median_objective']:.4g} | {c['problems_at_or_below_' + ref]}/{c['problems']} "
                   f"| {c['mean_iterations']:.1f} | {c['gflops_per_plan']:.3g} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser("dino_wm_peer", __doc__, model=False)
    ap.add_argument("--dino-wm", help="checkout of github.com/gaoyuezhou/dino_wm (default: $DINO_WM, .peers/dino_wm)")
    ap.add_argument("--problems", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cells", nargs="+", type=check_cell, help=f"cells to run (default: --grid's; names: {_CELL.pattern})")
    ap.add_argument("--grid", choices=tuple(GRIDS), default="issue", help="a named list of cells (GRIDS)")
    ap.add_argument("--goals", choices=("reachable", "frame"), default="reachable",
                    help="reachable: a latent the model reaches (objective 0 exists); frame: another frame's latent")
    ap.add_argument("--reference", help="the cell ratios are taken against (default: dinowm_cem_30, else _10)")
    ap.add_argument("--plot", type=Path, help="with --table: also plot time per plan against objective here")
    ap.add_argument("--img-size", type=int, default=Sizes().img_size, help="frame side (predictor sizes: Sizes)")
    ap.add_argument("--work-dir", type=Path, help="keep the run folder and artifact here (default: a temp dir)")
    ap.add_argument("--only", type=int, nargs="+", help="plan only these problem indices (parallel runs; --merge)")
    ap.add_argument("--table", type=Path, help="print a markdown table of this result file and exit")
    ap.add_argument("--merge", type=Path, nargs="+", help="merge the rows of --only runs into --out and exit")
    args = ap.parse_args(argv)
    cells = tuple(args.cells or GRIDS[args.grid])
    if args.table:
        result = json.loads(args.table.read_text())
        if args.reference:
            result["summary"] = {**result["summary"], **summarize(result["rows"], {
                k: v * 1e9 for k, v in result["summary"]["gflops_per_sample"].items()}, args.reference)}
        print(table(result))
        print("\nselected (cheapest of ours at or below each DINO-WM cell's objective):\n"
              + json.dumps(result["summary"].get("selected"), indent=1))
        if args.plot:
            plot(result, args.plot)
        return 0
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        rows = [r for p in parts for r in p["rows"]]
        merged = {**parts[0], "rows": rows, "merged_from": [str(p) for p in args.merge],
                  "machines": [p["machine"] for p in parts],
                  "summary": {**parts[0]["summary"], **summarize(rows, {
                      k: v * 1e9 for k, v in parts[0]["summary"]["gflops_per_sample"].items()}, args.reference)}}
        text = json.dumps(merged, indent=1)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
        return 0
    checkout = find_checkout(args.dino_wm)
    if checkout is None:
        print("no DINO-WM checkout (give --dino-wm PATH or $DINO_WM; see this module's docstring)", file=sys.stderr)
        return 2
    if missing_deps():
        print(f"DINO-WM's modules need {missing_deps()}: pip install -e '.[peers]'", file=sys.stderr)
        return 2
    result = harness.Result("dino_wm_peer", args)
    sizes = QUICK_SIZES if args.quick else Sizes(img_size=args.img_size)
    problems = 1 if args.quick else args.problems
    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dino_wm_peer_")))
        run = build_run(checkout, work, sizes, args.seed)
        artifact = work / "imported.pt"
        import_run(run.dir, read_stats(run.stats), artifact, run.encoder_weights, planner="default")
        model = load_model(artifact, device="cpu")
        rows = compare(run, model, problems, args.seed, cells, args.quick, args.only, args.goals)
    result.data["rows"] = rows
    return result.finish({**summarize(rows, flops_per_sample(model), args.reference), "sizes": asdict(sizes),
                          "dino_wm_checkout": str(checkout), "problems": problems,
                          "configs": {k: v.to_dict() for k, v in our_configs(model, args.quick, cells).items()}})


if __name__ == "__main__":
    sys.exit(main())
