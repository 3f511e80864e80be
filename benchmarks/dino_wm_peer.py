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
from benchmarks.problems import reachable_problem
from benchmarks.dino_wm_run import (QUICK_SIZES, DinoWMRun, LatentGoalWM, LossLog, Sizes, build_run, find_checkout,
                                    missing_deps)
from models import Latent, WorldModel, load_model
from models.flops import encoder_flops, rollout_flops
from models.dino_wm.importer import import_run, read_stats
from planning import PlannerConfig, objective, plan


HORIZON, SAMPLES, TOPK = 5, 300, 30  # DINO-WM's published CEM settings (conf/planner/cem.yaml)
CELLS = ("dinowm_cem_30", "ours_cem_30", "dinowm_cem_10", "ours_cem_10", "ours_default", "ours_icem_50x10")


# The comparison ----------------------------------------------------------------
def our_configs(model: WorldModel, quick: bool) -> dict[str, PlannerConfig]:
    paper = harness.planner(None, objective="last", alpha=1.0)
    cfgs = {"ours_cem_30": harness.planner(paper, **harness.budget(SAMPLES, 30, elites=TOPK, min_iterations=30)),
            "ours_cem_10": harness.planner(paper, **harness.budget(SAMPLES, 10, elites=TOPK, min_iterations=10)),
            "ours_default": harness.planner(model, "cpu"),
            "ours_icem_50x10": harness.planner(paper, **harness.budget(50, 10, elites=5, min_iterations=4),
                                               method="icem", patience=3)}
    if quick:
        cfgs = {k: harness.planner(c, **harness.budget(8, 2, elites=2, min_iterations=min(c.min_iterations, 2)))
                for k, c in cfgs.items()}
    return cfgs


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
            quick: bool, only: list[int] | None = None) -> list[dict[str, Any]]:
    """Rows of (cell, problem): wall and process CPU seconds per plan, final objective.
    only: plan these problem indices (of the `problems` drawn from `seed`) only."""
    prob = reachable_problem(model, problems, HORIZON, seed)
    stats = model.stats
    prep = run.preprocessor.Preprocessor(action_mean=stats.action_mean, action_std=stats.action_std,
                                         state_mean=None, state_std=None, proprio_mean=stats.proprio_mean,
                                         proprio_std=stats.proprio_std, transform=lambda x: (x - 0.5) / 0.5)
    goal_wm = LatentGoalWM(run.wm)
    cfgs = our_configs(model, quick)
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
                steps = 2 if quick else int(cell.rsplit("_", 1)[1])
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
                row.update(seconds=dt, cpu_seconds=cpu, iterations=res.iterations, rollouts=int(res.rollouts), stop=res.stop_reason,
                           objective=_final_objective(model, z_obs, z_goal, res.actions[None]),
                           planner_loss=float(res.loss), loss_trace=list(res.loss_trace))
            row["load_average_1m"] = round(os.getloadavg()[0], 2)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "loss_trace"}), file=sys.stderr, flush=True)
    return rows


def flops_per_sample(model: WorldModel) -> dict[str, float]:
    """Analytic FLOPs of one sample's rollout: DINO-WM's (re-encoding included) and ours, and one encoding."""
    c = model.config
    return {"dinowm": rollout_flops(c, HORIZON, "dino_wm").total, "ours": rollout_flops(c, HORIZON, "cached").total,
            "encoder": encoder_flops(c)}


def summarize(rows: list[dict[str, Any]], per_sample: dict[str, float]) -> dict[str, Any]:
    """Medians per cell over problems; speedups from process CPU seconds (`cpu_seconds`: what each
    plan computed, whatever share of the core the machine gave it) and from wall seconds."""
    cells: dict[str, Any] = {}
    for cell in dict.fromkeys(r["cell"] for r in rows):
        rs = [r for r in rows if r["cell"] == cell]
        peer = "dinowm" if cell.startswith("dinowm") else "ours"
        cells[cell] = {"median_seconds": statistics.median(r["seconds"] for r in rs),
                       "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
                       "median_objective": statistics.median(r["objective"] for r in rs),
                       "mean_objective": statistics.fmean(r["objective"] for r in rs),
                       "mean_iterations": statistics.fmean(r["iterations"] for r in rs),
                       "gflops_per_plan": statistics.fmean(r["rollouts"] for r in rs) * per_sample[peer] / 1e9,
                       "problems": len(rs)}
    ref = "dinowm_cem_30" if "dinowm_cem_30" in cells else next(iter(cells))
    by_problem = {(r["cell"], r["problem"]): r["objective"] for r in rows}
    for cell, s in cells.items():
        s["speedup_vs_" + ref] = cells[ref]["median_cpu_seconds"] / s["median_cpu_seconds"]
        s["wall_speedup_vs_" + ref] = cells[ref]["median_seconds"] / s["median_seconds"]
        s["problems_at_or_below_" + ref] = sum(by_problem[(cell, p)] <= by_problem[(ref, p)] * (1 + 1e-6)
                                               for p in {r["problem"] for r in rows})
    agree = [abs(r["dino_wm_objective"] - r["objective"]) / max(abs(r["objective"]), 1e-12)
             for r in rows if "dino_wm_objective" in r]
    out: dict[str, Any] = {"cells": cells, "reference": ref,
                           "objective_agreement_max_rel": max(agree) if agree else None,
                           "gflops_per_sample": {k: v / 1e9 for k, v in per_sample.items()},
                           "encoder_share_of_dinowm_sample": per_sample["encoder"] / per_sample["dinowm"]}
    if "ours_default" in cells and ref == "dinowm_cem_30":
        d, r = cells["ours_default"], cells[ref]
        out["target"] = {"speedup": d["speedup_vs_" + ref], "wall_speedup": d["wall_speedup_vs_" + ref],
                         "default_median_objective": d["median_objective"],
                         "dinowm_median_objective": r["median_objective"],
                         "met": d["speedup_vs_" + ref] >= 10 and d["median_objective"] <= r["median_objective"]}
    return out


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
    ap.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
    ap.add_argument("--img-size", type=int, default=Sizes().img_size, help="frame side (predictor sizes: Sizes)")
    ap.add_argument("--work-dir", type=Path, help="keep the run folder and artifact here (default: a temp dir)")
    ap.add_argument("--only", type=int, nargs="+", help="plan only these problem indices (parallel runs; --merge)")
    ap.add_argument("--table", type=Path, help="print a markdown table of this result file and exit")
    ap.add_argument("--merge", type=Path, nargs="+", help="merge the rows of --only runs into --out and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        rows = [r for p in parts for r in p["rows"]]
        merged = {**parts[0], "rows": rows, "merged_from": [str(p) for p in args.merge],
                  "machines": [p["machine"] for p in parts],
                  "summary": summarize(rows, {k: v * 1e9 for k, v in parts[0]["summary"]["gflops_per_sample"].items()})}
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
        rows = compare(run, model, problems, args.seed, tuple(args.cells), args.quick, args.only)
    result.data["rows"] = rows
    return result.finish({**summarize(rows, flops_per_sample(model)), "sizes": asdict(sizes),
                          "dino_wm_checkout": str(checkout), "problems": problems,
                          "configs": {k: v.to_dict() for k, v in our_configs(model, args.quick).items()}})


if __name__ == "__main__":
    sys.exit(main())
