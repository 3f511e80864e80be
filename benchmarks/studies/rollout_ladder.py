"""A rollout's FLOPs (counted by models/flops.py) against this machine's matmul peak, one lever at a time.

    python -m benchmarks.studies.rollout_ladder [--quick] [--out FILE] [--patch-side 14] [--samples 2]
                                                [--rounds 3] [--threads 2]

A study: the ladder's finding (docs/benchmarks.md, "FLOPs and the distance to
the limit" and "Performance work, step by step") is written; the script is
kept to re-take the ladder on other hardware. It measures, in one run:

* the fp32 matmul peak: the best of several 2048^3 GEMMs (`torch.mm`) at the
  benchmark's thread count, before and after the ladder (on a shared machine
  the best rate seen is the conservative choice);
* a *ladder* of rollout implementations on the same weights and inputs, each
  adding one lever to the one before, from DINO-WM's execution to ours:
  time, analytic FLOPs, achieved FLOP/s and its fraction of the peak (one
  row per rung).

Rungs are timed round-robin (one of each per round) and reported as medians,
so a change of machine load hits every rung alike. On a machine shared with
other work, the process's CPU time (divided by the thread count) is reported
beside wall time: it excludes the time other processes held the core, so
its FLOP/s against the CPU-time peak is the steadier efficiency figure.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch

from benchmarks import harness
from benchmarks.harness import measure_peak
from benchmarks.naive import naive_rollout
from benchmarks.problems import QUICK_DINO, dino_wm_config, random_model, reachable_problem
from models import Latent, WorldModel, WorldModelConfig
from models.flops import Flops, plan_flops, rollout_flops


# The ladder ------------------------------------------------------------------------
def rollout_before(model: WorldModel, z0: Latent, actions: torch.Tensor) -> Latent:
    """`WorldModel.rollout` as it was before the key/value cache (issue 5): a
    preallocated frame buffer, SDPA, the last block on the last frame only,
    and every step's window recomputed."""
    b, h, _ = actions.shape
    c = model.config
    a_emb = model.action_encoder(actions)
    p, d = c.tokens_per_frame, c.token_dim
    frames = torch.empty(b, h, p, d, dtype=a_emb.dtype)
    frames[:, 0] = model.tokens(z0, a_emb[:, 0])
    visual, proprio = [], []
    for t in range(h):
        lo = max(0, t + 1 - c.num_hist)
        nxt = model.predictor(frames[:, lo:t + 1].reshape(b, (t + 1 - lo) * p, d), last_only=True)
        z = model.split(nxt)
        visual.append(z.visual)
        proprio.append(z.proprio)
        if t + 1 < h:
            frames[:, t + 1] = nxt
            model._set_action(frames[:, t + 1], a_emb[:, t + 1])
    return Latent(torch.stack(visual, 1), torch.stack(proprio, 1))


def ladder(model: WorldModel, samples: int, horizon: int, seed: int = 0) -> list[tuple[str, str, Callable[[], Latent]]]:
    """(name, FLOP method, thunk) per rung, all on the same inputs."""
    prob = reachable_problem(model, 1, horizon, seed)
    rep = torch.zeros(samples, dtype=torch.long)
    z0 = prob.z_obs.index(rep)
    pixels = prob.pixels[rep]
    proprio = None if prob.norm_proprio is None else prob.norm_proprio[rep]
    actions = torch.randn(samples, horizon, model.config.action_dim, generator=torch.Generator().manual_seed(seed))

    def encode_once_then(attention: str) -> Callable[[], Latent]:
        return lambda: naive_rollout(model, pixels, proprio, actions, attention, z0=z0)

    return [
        ("naive: DINO-WM execution (re-encode, concat, full predictor, manual attention)", "dino_wm",
         lambda: naive_rollout(model, pixels, proprio, actions)),
        ("+ encode the observation once", "dino_wm-noenc", encode_once_then("manual")),
        ("+ SDPA instead of manual masked softmax", "dino_wm-noenc", encode_once_then("sdpa")),
        ("+ frame buffer, last block on the last frame only (before issue 5)", "recompute",
         lambda: rollout_before(model, z0, actions)),
        ("+ key/value cache while the window grows (WorldModel.rollout)", "cached",
         lambda: model.rollout(z0, actions)),
    ]


def run_ladder(model: WorldModel, samples: int, horizon: int, rounds: int) -> list[dict]:
    rungs = ladder(model, samples, horizon)
    times: list[list[float]] = [[] for _ in rungs]
    cpu: list[list[float]] = [[] for _ in rungs]
    with torch.inference_mode():
        for _, _, fn in rungs:
            fn()  # warm-up
        ref = rungs[-1][2]()
        for i, (_, _, fn) in enumerate(rungs):  # every rung computes the same rollout
            out = fn()
            torch.testing.assert_close(out.visual, ref.visual, rtol=1e-3, atol=1e-3)
        for _ in range(rounds):
            for i, (_, _, fn) in enumerate(rungs):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                times[i].append(time.perf_counter() - t0)
                cpu[i].append((time.process_time() - c0) / torch.get_num_threads())
    rows, prev = [], None
    for (name, method, _), ts, cs in zip(rungs, times, cpu):
        if method == "dino_wm-noenc":
            flops = rollout_flops(model.config, horizon, "dino_wm")
            flops = Flops(flops.linear, flops.attention, 0)
        else:
            flops = rollout_flops(model.config, horizon, method)
        flops = flops * samples
        t = statistics.median(ts)
        rows.append({"rung": name, "execution": method, "seconds": round(t, 4), "min_seconds": round(min(ts), 4),
                     "cpu_seconds": round(statistics.median(cs), 4), "gflop": round(flops.total / 1e9, 2),
                     "gflops_per_s": round(flops.total / t / 1e9, 2),
                     "gflops_per_cpu_s": round(flops.total / statistics.median(cs) / 1e9, 2),
                     "speedup_vs_previous": None if prev is None else round(prev / t, 2)})
        prev = t
    rows[-1]["speedup_vs_naive"] = round(rows[0]["seconds"] / rows[-1]["seconds"], 2)
    return rows


def flop_table(configs: dict[str, WorldModelConfig], horizon: int, samples: int, iterations: int) -> dict[str, dict]:
    """Analytic per-rollout and per-plan FLOPs (all iterations) for each config."""
    out = {}
    for name, c in configs.items():
        ours, naive = rollout_flops(c, horizon, "cached"), rollout_flops(c, horizon, "dino_wm")
        out[name] = {"rollout_ours": ours.as_dict(), "rollout_naive": naive.as_dict(),
                     "plan_ours_all_iterations": plan_flops(c, horizon, samples, iterations).total,
                     "plan_naive": plan_flops(c, horizon, samples, iterations, "dino_wm").total,
                     "naive_over_ours": round(naive.total / ours.total, 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser("studies.rollout_ladder", __doc__, threads=2, model=False)
    ap.add_argument("--patch-side", type=int, default=14, help="patches per side of the ladder's model (14: 196)")
    ap.add_argument("--samples", type=int, default=2, help="samples per ladder rollout (one chunk)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    result = harness.Result("rollout_ladder", args)
    paper = harness.planner(None)
    side, samples, rounds = (1, 2, 1) if args.quick else (args.patch_side, args.samples, args.rounds)
    model = random_model(dino_wm_config(side), **(QUICK_DINO if args.quick else {}))
    peak = measure_peak(512 if args.quick else 2048, 2 if args.quick else 5)
    rows = run_ladder(model, samples, paper.horizon, rounds)
    peak_after = measure_peak(512 if args.quick else 2048, 2 if args.quick else 5)
    best = max(peak["peak_flops"], peak_after["peak_flops"])  # conservative: the best GEMM seen in this run
    best_cpu = max(peak["peak_flops_cpu_time"], peak_after["peak_flops_cpu_time"])
    for r in rows:
        r["fraction_of_peak"] = round(r["gflops_per_s"] * 1e9 / best, 3)
        r["fraction_of_peak_cpu_time"] = round(r["gflops_per_cpu_s"] * 1e9 / best_cpu, 3)
        result.add(r)
    table = flop_table({"dino-wm (196 patches)": dino_wm_config(14), "ladder model": model.config},
                       paper.horizon, paper.solver().samples, paper.max_iterations)
    return result.finish({
        "peak_gflops": round(best / 1e9, 2),
        "peak_gflops_before_after": [round(peak["peak_flops"] / 1e9, 2), round(peak_after["peak_flops"] / 1e9, 2)],
        "peak_gflops_cpu_time": round(best_cpu / 1e9, 2), "ladder_model": model.config.name,
        "ladder_samples": samples, "horizon": paper.horizon, "fraction_of_peak": rows[-1]["fraction_of_peak"],
        "fraction_of_peak_cpu_time": rows[-1]["fraction_of_peak_cpu_time"], "flops": table})


if __name__ == "__main__":
    sys.exit(main())
