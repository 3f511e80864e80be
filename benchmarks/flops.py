"""FLOPs of a rollout and a plan, counted analytically, against this machine's matmul peak.

    python -m benchmarks.flops [--json] [--quick] [--patch-side 14] [--samples 2] [--threads 2]

Counts the matmuls of the predictor (projections, MLP, and both attention
products, QK^T and AV, over every query/key pair actually computed) and of
the image encoder; LayerNorm, GELU, softmax, the embeddings and the
objective are not counted (well under 1% of a DINO-WM-size rollout). Then
it measures, in the same run:

* the fp32 matmul peak: the best of several 2048^3 GEMMs (`torch.mm`) at the
  benchmark's thread count, before and after the ladder (on a shared machine
  the best rate seen is the conservative choice);
* a *ladder* of rollout implementations on the same weights and inputs, each
  adding one lever to the one before, from DINO-WM's execution to ours:
  time, analytic FLOPs, achieved FLOP/s and its fraction of the peak.

Rungs are timed round-robin (one of each per round) and reported as medians,
so a change of machine load hits every rung alike. On a machine shared with
other work, the process's CPU time (divided by the thread count) is reported
beside wall time: it excludes the time other processes held the core, so
its FLOP/s against the CPU-time peak is the steadier efficiency figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from benchmarks.common import DEFAULT_THREADS, QUICK_DINO, dino_wm_config, machine, random_model, reachable_problem, set_threads
from benchmarks.naive import naive_rollout
from models import Latent, WorldModel, WorldModelConfig
from planning import CEMConfig


# Analytic FLOPs ------------------------------------------------------------------
def _mm(m: int, k: int, n: int) -> int:
    return 2 * m * k * n


@dataclass
class Flops:
    """Matmul FLOPs, split into projections+MLP (`linear`) and attention products."""

    linear: int = 0
    attention: int = 0
    encoder: int = 0

    @property
    def total(self) -> int:
        return self.linear + self.attention + self.encoder

    def __add__(self, o: "Flops") -> "Flops":
        return Flops(self.linear + o.linear, self.attention + o.attention, self.encoder + o.encoder)

    def __mul__(self, k: int) -> "Flops":
        return Flops(self.linear * k, self.attention * k, self.encoder * k)

    def as_dict(self) -> dict[str, int]:
        return {"linear": self.linear, "attention": self.attention, "encoder": self.encoder, "total": self.total}


def block_flops(c: WorldModelConfig, queries: int, keys: int, new_kv: int | None = None,
                outputs: bool = True) -> Flops:
    """One predictor block: `queries` tokens attend to `keys` tokens; keys and
    values are projected for `new_kv` tokens (default: all keys). outputs=False:
    only the key/value projection (a block whose outputs nobody reads)."""
    d, inner, mlp = c.token_dim, c.heads * c.dim_head, c.mlp_dim
    kv = _mm(keys if new_kv is None else new_kv, d, 2 * inner)
    if not outputs:
        return Flops(linear=kv)
    lin = kv + _mm(queries, d, inner) + _mm(queries, inner, d) + _mm(queries, d, mlp) + _mm(queries, mlp, d)
    return Flops(linear=lin, attention=2 * _mm(queries, inner, keys))


def rollout_flops(c: WorldModelConfig, horizon: int, method: str) -> Flops:
    """One sample's rollout.

    method "ours": `WorldModel.rollout` (cached growth, then sliding windows with
    the last block computing the last frame only); "before": the rollout
    before the cache (every step recomputes its window, last-only last block);
    "naive": DINO-WM (every block over every token of the window, plus one
    encoder pass per sample)."""
    p, nh, depth = c.tokens_per_frame, c.num_hist, c.depth
    total = Flops(encoder=encoder_flops(c) if method == "naive" else 0)
    for t in range(horizon):
        n = min(t + 1, nh) * p
        if method == "ours" and t < nh:
            total = total + block_flops(c, p, n, new_kv=p) * depth
        elif method == "naive":
            total = total + block_flops(c, n, n) * depth
        else:  # a full window, the last block for the last frame's queries only
            total = total + block_flops(c, n, n) * (depth - 1) + block_flops(c, p, n)
    return total


def encoder_flops(c: WorldModelConfig) -> int:
    """Matmul/conv FLOPs of encoding one frame."""
    if c.encoder == "conv":
        flops, cin, side = 0, 3, c.image_size
        for cout in c.conv_channels:
            side //= 2
            flops += _mm(side * side, cin * 16, cout)  # 4x4 stride-2 conv
            cin = cout
        return flops + _mm(c.num_patches, cin, c.encoder_dim)
    n, d = c.num_patches + 1, c.vit_dim
    per_block = _mm(n, d, 3 * d) + 2 * _mm(n, d, n) + _mm(n, d, d) + _mm(n, d, 4 * d) + _mm(n, 4 * d, d)
    return _mm(c.num_patches, 3 * c.vit_patch_size ** 2, d) + c.vit_depth * per_block


def plan_flops(c: WorldModelConfig, cem: CEMConfig, iterations: int, method: str) -> Flops:
    """Every rollout of a plan: iterations x samples, plus the final scoring of the plan."""
    return rollout_flops(c, cem.horizon, method) * (iterations * cem.num_samples + 1)


# The machine ---------------------------------------------------------------------
def measure_peak(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """fp32 GEMM FLOP/s at the current thread count: best and median of `repeats`
    over wall time, and the best over this process's CPU time divided by the
    thread count (a shared machine's other work does not count against it)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)  # warm-up: threads, caches
    rates, cpu_rates = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        torch.mm(a, b, out=out)
        rates.append(_mm(size, size, size) / (time.perf_counter() - t0))
        cpu_rates.append(_mm(size, size, size) / ((time.process_time() - c0) / torch.get_num_threads()))
    return {"peak_flops": max(rates), "median_flops": statistics.median(rates), "size": size,
            "peak_flops_cpu_time": max(cpu_rates)}


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
        ("naive: DINO-WM execution (re-encode, concat, full predictor, manual attention)", "naive",
         lambda: naive_rollout(model, pixels, proprio, actions)),
        ("+ encode the observation once", "naive-noenc", encode_once_then("manual")),
        ("+ SDPA instead of manual masked softmax", "naive-noenc", encode_once_then("sdpa")),
        ("+ frame buffer, last block on the last frame only (before issue 5)", "before",
         lambda: rollout_before(model, z0, actions)),
        ("+ key/value cache while the window grows (WorldModel.rollout)", "ours",
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
        if method == "naive-noenc":
            flops = rollout_flops(model.config, horizon, "naive")
            flops = Flops(flops.linear, flops.attention, 0)
        else:
            flops = rollout_flops(model.config, horizon, method)
        flops = flops * samples
        t = statistics.median(ts)
        rows.append({"rung": name, "seconds": round(t, 4), "min_seconds": round(min(ts), 4),
                     "cpu_seconds": round(statistics.median(cs), 4), "gflop": round(flops.total / 1e9, 2),
                     "gflops_per_s": round(flops.total / t / 1e9, 2),
                     "gflops_per_cpu_s": round(flops.total / statistics.median(cs) / 1e9, 2),
                     "speedup_vs_previous": None if prev is None else round(prev / t, 2)})
        prev = t
    rows[-1]["speedup_vs_naive"] = round(rows[0]["seconds"] / rows[-1]["seconds"], 2)
    return rows


def flop_table(configs: dict[str, WorldModelConfig], cem: CEMConfig) -> dict[str, dict]:
    """Analytic per-rollout and per-plan FLOPs (all iterations) for each config."""
    out = {}
    for name, c in configs.items():
        ours, naive = rollout_flops(c, cem.horizon, "ours"), rollout_flops(c, cem.horizon, "naive")
        out[name] = {"rollout_ours": ours.as_dict(), "rollout_naive": naive.as_dict(),
                     "plan_ours_all_iterations": plan_flops(c, cem, cem.opt_steps, "ours").total,
                     "plan_naive": plan_flops(c, cem, cem.opt_steps, "naive").total,
                     "naive_over_ours": round(naive.total / ours.total, 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.flops", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures little")
    ap.add_argument("--patch-side", type=int, default=14, help="patches per side of the ladder's model (14: 196)")
    ap.add_argument("--samples", type=int, default=2, help="samples per ladder rollout (one chunk)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    cem = CEMConfig.paper()
    side, samples, rounds = (1, 2, 1) if args.quick else (args.patch_side, args.samples, args.rounds)
    model = random_model(dino_wm_config(side), **(QUICK_DINO if args.quick else {}))
    peak = measure_peak(512 if args.quick else 2048, 2 if args.quick else 5)
    rows = run_ladder(model, samples, cem.horizon, rounds)
    peak_after = measure_peak(512 if args.quick else 2048, 2 if args.quick else 5)
    best = max(peak["peak_flops"], peak_after["peak_flops"])  # conservative: the best GEMM seen in this run
    best_cpu = max(peak["peak_flops_cpu_time"], peak_after["peak_flops_cpu_time"])
    for r in rows:
        r["fraction_of_peak"] = round(r["gflops_per_s"] * 1e9 / best, 3)
        r["fraction_of_peak_cpu_time"] = round(r["gflops_per_cpu_s"] * 1e9 / best_cpu, 3)
    table = flop_table({"dino-wm (196 patches)": dino_wm_config(14), "ladder model": model.config}, cem)
    result = {"machine": machine(), "peak_gflops": round(best / 1e9, 2),
              "peak_gflops_before_after": [round(peak["peak_flops"] / 1e9, 2), round(peak_after["peak_flops"] / 1e9, 2)],
              "peak_gflops_cpu_time": round(best_cpu / 1e9, 2),
              "fraction_of_peak_cpu_time": rows[-1]["fraction_of_peak_cpu_time"],
              "ladder_model": model.config.name, "ladder_samples": samples, "horizon": cem.horizon,
              "ladder": rows, "fraction_of_peak": rows[-1]["fraction_of_peak"], "flops": table}
    if args.json:
        print(json.dumps(result))
        return 0
    m = result["machine"]
    print(f"{m['cpu']}, {m['logical_cores']} cores, torch {m['torch']}, {m['torch_threads']} threads, "
          f"load {m['load_average_1m']}")
    print(f"fp32 matmul peak: {result['peak_gflops']} GFLOP/s (before/after {result['peak_gflops_before_after']})")
    print(f"rollout ladder: {model.config.name}, {samples} samples, horizon {cem.horizon}, median of {rounds}")
    for r in rows:
        print(f"  {r['seconds']:8.3f} s (cpu {r['cpu_seconds']:.3f} s) {r['gflop']:9.1f} GFLOP "
              f"{r['gflops_per_s']:7.1f} GFLOP/s {100 * r['fraction_of_peak']:5.1f}% of peak "
              f"({100 * r['fraction_of_peak_cpu_time']:5.1f}% by CPU time)  x{r['speedup_vs_previous'] or 1:<5} {r['rung']}")
    for name, t in table.items():
        print(f"{name}: rollout {t['rollout_ours']['total'] / 1e9:.2f} GFLOP ours, "
              f"{t['rollout_naive']['total'] / 1e9:.2f} naive; paper plan (30 it x 300): "
              f"{t['plan_ours_all_iterations'] / 1e12:.1f} TFLOP ours, {t['plan_naive'] / 1e12:.1f} naive")
    return 0


if __name__ == "__main__":
    sys.exit(main())
