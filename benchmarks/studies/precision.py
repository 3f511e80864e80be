"""Reduced precision and torch.compile against fp32, on the shipped default model.

    python -m benchmarks.studies.precision [--quick] [--out FILE] [--episodes 20] [--problems 4] [--threads 1]
                                           [--device cpu|cuda] [--no-compile]

A study: the CPU findings are in docs/gpu.md and docs/benchmarks.md
(section 6); it is kept for the GPU run those pages still ask for. One row
per variant: speed, agreement with fp32, closed-loop success.

For each inference variant (models/inference.py): fp32, bf16 autocast, bf16
cast, fp16 autocast, fp32 compiled (inductor):

* speed: a rollout of the CPU preset's samples (100, horizon 5), timed
  round-robin across variants (medians), and the encode of one frame;
* agreement with fp32 on wall-environment problems: the overlap of the top-k
  elites of the same samples, the relative change of their losses, the
  fp32 plan's loss under the variant, and the variant's own plan scored by
  the fp32 model (same seed);
* closed loop: success rate on `--episodes` near-goal wall episodes (the
  example client's loop in-process: envs.episodes with
  server.local.LocalClient), for fp32, bf16 autocast and the compiled model.

Ratios are measured in one process, interleaved; the load average is
recorded. On a CPU without native bf16/fp16 matmuls (no AVX512-BF16/AMX)
reduced precision is emulated and much slower: the figures say so.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import torch

from benchmarks import harness
from benchmarks.problems import wall_problem
from models import InferenceConfig, WorldModel, load_model
from planning import PlannerConfig, objective, plan

VARIANTS = {
    "fp32": InferenceConfig(),
    "bf16-autocast": InferenceConfig(dtype="bf16"),
    "bf16-cast": InferenceConfig(dtype="bf16", strategy="cast"),
    "fp16-autocast": InferenceConfig(dtype="fp16"),
    "fp32-compiled": InferenceConfig(compile=True),
}
CLOSED_LOOP = ("fp32", "fp32-compiled", "bf16-autocast")  # cheapest first: partial results still say something
PLANS = ("bf16-autocast", "fp32-compiled")  # plan-level agreement (emulated fp16/bf16-cast plans are slow on CPU)


def _losses(model: WorldModel, cem: PlannerConfig, z: Any, g: Any, actions: torch.Tensor) -> torch.Tensor:
    rep = torch.zeros(actions.shape[0], dtype=torch.long)
    return objective(model.rollout(z.index(rep), actions), g.index(rep), cem.objective, cem.alpha, cem.base)


def agreement(ref: WorldModel, model: WorldModel, problems: Any, cem: PlannerConfig, plans: bool) -> dict[str, Any]:
    """Elites and losses of the same samples; with `plans`, also the plans (one per problem) of both."""
    lo, hi = ref.codec.model_bounds(ref.config.action_low, ref.config.action_high)
    overlap, rel, same_plan, own_plan = [], [], [], []
    with torch.inference_mode():
        for i in range(problems.batch):
            z, g = problems.z_obs.index(slice(i, i + 1)), problems.z_goal.index(slice(i, i + 1))
            samples = torch.randn(cem.solver().samples, cem.horizon, ref.config.action_dim,
                                  generator=torch.Generator().manual_seed(i)).clamp(lo, hi)
            l_ref, l_var = _losses(ref, cem, z, g, samples), _losses(model, cem, z, g, samples)
            a = set(l_ref.topk(cem.solver().elites, largest=False).indices.tolist())
            b = set(l_var.topk(cem.solver().elites, largest=False).indices.tolist())
            overlap.append(len(a & b) / cem.solver().elites)
            rel.append(float(((l_var - l_ref).abs() / l_ref.abs().clamp_min(1e-12)).median()))
            if not plans:
                continue
            (p_ref,) = plan(ref, z, g, cem, seeds=[i])
            (p_var,) = plan(model, z, g, cem, seeds=[i])
            same_plan.append(abs(float(_losses(model, cem, z, g, p_ref.actions[None])) - p_ref.loss)
                             / max(p_ref.loss, 1e-12))
            own_plan.append((float(_losses(ref, cem, z, g, p_var.actions[None])), p_ref.loss))
    out: dict[str, Any] = {"elite_overlap_min": min(overlap), "elite_overlap_mean": round(statistics.fmean(overlap), 3),
                           "sample_loss_rel_error_median": round(statistics.median(rel), 4)}
    if plans:
        out.update(same_plan_loss_rel_error_max=round(max(same_plan), 4),
                   own_plan_fp32_loss_vs_fp32_plan=[[round(x, 5), round(y, 5)] for x, y in own_plan])
    return out


def speed(models: dict[str, WorldModel], problems: Any, cem: PlannerConfig, rounds: int) -> dict[str, dict[str, float]]:
    z = problems.z_obs.index(torch.zeros(cem.solver().samples, dtype=torch.long))
    actions = torch.randn(cem.solver().samples, cem.horizon, next(iter(models.values())).config.action_dim)
    times: dict[str, list[float]] = {k: [] for k in models}
    enc: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            m.rollout(z, actions)  # warm-up
        for _ in range(rounds):
            for name, m in models.items():
                t0 = time.perf_counter()
                m.rollout(z, actions)
                times[name].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                m.encode_observation(problems.frames[:1], problems.proprio[:1])
                enc[name].append(time.perf_counter() - t0)
    base = statistics.median(times["fp32"])
    return {k: {"rollout_ms": round(1000 * statistics.median(v), 2), "encode_ms": round(1000 * statistics.median(enc[k]), 2),
                "rollout_speed_vs_fp32": round(base / statistics.median(v), 3)} for k, v in times.items()}


def closed_loop(model: WorldModel, episodes: int, seed: int) -> dict[str, Any]:
    from envs.episodes import wall_episodes, wall_summary
    from server.local import LocalClient

    return wall_summary(list(wall_episodes(LocalClient(model), episodes, seed, "near")), "near", seed)


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser("studies.precision", __doc__)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--problems", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled variant")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    variants = dict(VARIANTS)
    if args.no_compile:
        variants.pop("fp32-compiled")
    elif args.quick:
        variants["fp32-compiled"] = InferenceConfig(compile=True, compile_backend="eager")
    n_prob, episodes, rounds = (2, 2, 1) if args.quick else (args.problems, args.episodes, args.rounds)
    result = harness.Result("precision", args, device=args.device)
    path = harness.wall_model(args.model)
    models, load_s = {}, {}
    for name, cfg in variants.items():
        t0 = time.perf_counter()
        models[name] = load_model(path, device=args.device, inference=cfg)
        load_s[name] = round(time.perf_counter() - t0, 1)
    ref = models["fp32"]
    cem = harness.planner(ref, ref.device.type, **(harness.budget(20, 2, elites=4) if args.quick else {}))
    problems = wall_problem(ref, n_prob, seed=0)
    speeds = speed(models, problems, cem, rounds)
    for name, m in models.items():
        row = {"variant": name, "inference": m.describe()["inference"], "load_seconds": load_s[name], **speeds[name]}
        if name != "fp32":
            row["agreement"] = agreement(ref, m, problems, cem, plans=name in PLANS)
        if name in CLOSED_LOOP:
            row["closed_loop"] = closed_loop(m, episodes, seed=0)
        result.add(row)
    return result.finish({"cem": cem.to_dict(), "problems": n_prob, "episodes": episodes,
                          "closed_loop_success": {r["variant"]: r["closed_loop"]["success_rate"]
                                                  for r in result.rows if "closed_loop" in r}})


if __name__ == "__main__":
    sys.exit(main())
