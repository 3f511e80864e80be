"""A DINO-WM-size model through the whole product: artifact, import, server, planner.

    python -m benchmarks.studies.dino_size [--quick] [--out FILE] [--device cpu|cuda] [--dtype fp32|bf16|fp16]
        [--compile] [--samples N] [--plan-iterations N] [--threads 1] [--no-server] [--work-dir DIR]

A study: the CPU findings are in docs/gpu.md and docs/benchmarks.md
(section 6); it is kept for the GPU run those pages still ask for.

Two artifacts of DINO-WM's size (DINOv2 ViT-S/14 on 224 px frames resized to
196 px: 196 patches; predictor width 404, depth 6, 16 heads x 64, MLP 2048,
3 frames of history):

* "native": seeded random weights saved in this project's artifact format;
* "imported": a DINO-WM-format run folder (hydra.yaml + a checkpoint pickled
  by DINO-WM-shaped classes, `tests/models/dino_wm_reference.py`, with its
  DINOv2 hub-style weights), converted by `models.dino_wm` with
  DINO-WM-loader statistics (`--stats-provenance dino-wm-loader`).

For each, in-process on `--device` at `--dtype`: encode of one frame, one
rollout of `--samples` samples chunked from the memory budget (the planner's
evaluator), one CEM iteration and a plan of `--plan-iterations` iterations,
each with analytic GFLOP (models/flops.py), GFLOP/s and the fraction of
the matmul peak measured in the same run on the same device and dtype, and
peak memory (CPU: the process's max RSS; CUDA: max_memory_allocated per
phase). Then the native artifact is served by the real server
(`benchmarks.harness.Server`) and a plan is timed through HTTP, with the
server's own timing and /stats. Rows: one per artifact and phase, and the
server's.

Defaults: the paper's 300 samples and 30 iterations on CUDA. On a CPU a
paper-settings DINO-WM-size plan takes hours (0.78 PFLOP of matmuls with
this project's rollout, 1.2 with DINO-WM's), so CPU runs default to 8
samples and 2 iterations and say so in the output; the FLOP count of the
paper-settings plan is printed beside them. --quick uses a
DINO-WM-shaped model small enough for a test (not a measurement).
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import harness
from benchmarks.problems import QUICK_DINO, dino_wm_config, random_model, smooth_frames
from models import InferenceConfig, WorldModel, WorldModelConfig, load_model, save_model
from models.flops import encoder_flops, plan_flops, rollout_flops
from planning import plan
from planning.evaluate import Evaluator


# Artifacts -----------------------------------------------------------------------
def native_artifact(cfg: WorldModelConfig, out: Path, seed: int = 0) -> Path:
    return save_model(random_model(cfg, seed), out, metadata={"kind": "DINO-WM-size, seeded random weights",
                                                               "seed": seed})


def imported_artifact(cfg: WorldModelConfig, root: Path, seed: int = 0) -> Path:
    """Write a DINO-WM-format run of `cfg`'s size and import it (feature concat, wall env)."""
    import pytest
    import yaml

    from models.dino_wm.importer import read_stats, import_run, stats_provenance
    from tests.models.dino_wm_reference import (DinoVisionTransformer, ProprioceptiveEmbedding, ViTPredictor,
                                                randomize, register_published)

    torch.manual_seed(seed)
    dino = DinoVisionTransformer(depth=cfg.vit_depth)
    predictor = ViTPredictor(num_patches=cfg.num_patches, num_frames=cfg.num_hist, dim=cfg.token_dim,
                             depth=cfg.depth, heads=cfg.heads, mlp_dim=cfg.mlp_dim, dim_head=cfg.dim_head)
    act = ProprioceptiveEmbedding(cfg.action_dim, cfg.action_emb_dim)
    prop = ProprioceptiveEmbedding(cfg.proprio_dim, cfg.proprio_emb_dim)
    for m in (dino, predictor, act, prop):
        randomize(m)
    run = root / "outputs" / "2025-01-01" / "00-00-00"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    side = cfg.vit_image_size // cfg.vit_patch_size  # DINO-WM: patches per side = img_size // 16
    hydra = {"img_size": side * 16, "frameskip": cfg.frameskip, "concat_dim": 1, "normalize_action": True,
             "action_emb_dim": cfg.action_emb_dim, "proprio_emb_dim": cfg.proprio_emb_dim, "num_hist": cfg.num_hist,
             "num_pred": 1, "num_action_repeat": 1, "num_proprio_repeat": 1,
             "encoder": {"name": "dinov2_vits14", "feature_key": "x_norm_patchtokens"},
             "predictor": {"depth": cfg.depth, "heads": cfg.heads, "mlp_dim": cfg.mlp_dim},
             "env": {"name": "wall", "dataset": {"_target_": "datasets.wall_dset.load_wall_slice_train_val",
                                                 "data_path": "/data/wall_single", "n_rollout": None}}}
    (run / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    with pytest.MonkeyPatch.context() as mp:
        register_published(mp)
        torch.save({"epoch": 1, "predictor": predictor, "action_encoder": act, "proprio_encoder": prop},
                   run / "checkpoints" / "model_latest.pth")
    torch.save(dino.state_dict(), root / "dinov2_vits14_pretrain.pth")
    stats = root / "stats.json"  # as DINO-WM's loader holds them: no provenance of its own
    stats.write_text(json.dumps({"action_mean": [0.0] * cfg.raw_action_dim, "action_std": [1.0] * cfg.raw_action_dim,
                                 "proprio_mean": [0.0] * cfg.proprio_dim, "proprio_std": [1.0] * cfg.proprio_dim}))
    prov = stats_provenance("dino-wm-loader", hydra, episodes=1920)
    out = root / "imported.pt"
    import_run(run, read_stats(stats, prov), out, root / "dinov2_vits14_pretrain.pth", name="dino-wm-size-imported")
    return out


# Measurements ----------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Phase:
    """Wall time and peak memory of one measured phase."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> "Phase":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        _sync(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        _sync(self.device)
        self.seconds = time.perf_counter() - self.t0
        if self.device.type == "cuda":
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:  # the process's high-water mark so far (ru_maxrss is KiB on Linux)
            self.peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _row(phase: Phase, flops: int, peak: float) -> dict[str, Any]:
    rate = flops / phase.seconds
    return {"seconds": round(phase.seconds, 4), "gflop": round(flops / 1e9, 2), "gflops_per_s": round(rate / 1e9, 2),
            "fraction_of_peak": round(rate / peak, 4), "peak_memory_mb": round(phase.peak_bytes / 2**20, 1)}


def measure_model(model: WorldModel, samples: int, plan_iterations: int, peak: float, seed: int = 0) -> dict[str, Any]:
    c, dev = model.config, model.device
    cem = harness.planner(None, **harness.budget(samples, plan_iterations))
    frames = torch.from_numpy(smooth_frames(2, c.image_size, seed))
    proprio = torch.zeros(2, c.proprio_dim)
    out: dict[str, Any] = {"name": c.name, "parameters": model.num_parameters(),
                           "inference": model.describe()["inference"]}
    with torch.inference_mode():
        model.encode_observation(frames[:1], proprio[:1])  # warm-up
        with Phase(dev) as ph:
            z_obs = model.encode_observation(frames[:1], proprio[:1])
        out["encode"] = _row(ph, encoder_flops(c), peak)
        z_goal = model.encode_observation(frames[1:], proprio[1:])
        evaluate = Evaluator(model, z_obs, z_goal, cem)
        actions = torch.randn(1, samples, cem.horizon, c.action_dim, generator=torch.Generator().manual_seed(seed))
        req = torch.zeros(1, dtype=torch.long, device=dev)
        with Phase(dev) as ph:
            evaluate(req, actions.to(dev))
        out["rollout"] = {**_row(ph, rollout_flops(c, cem.horizon).total * samples, peak),
                          "samples": samples, "chunk": evaluate.chunk,
                          "bytes_per_sample_estimate": model.rollout_bytes_per_sample(cem.horizon)}
        one = harness.planner(cem, **harness.budget(samples, 1, min_iterations=1))
        with Phase(dev) as ph:
            (res,) = plan(model, z_obs, z_goal, one, seeds=[seed])
        out["cem_iteration"] = _row(ph, plan_flops(c, one.horizon, samples, 1).total, peak)
        full = harness.planner(cem, min_iterations=min(5, plan_iterations))
        with Phase(dev) as ph:
            (res,) = plan(model, z_obs, z_goal, full, seeds=[seed])
        out["plan"] = {**_row(ph, plan_flops(c, full.horizon, samples, res.iterations).total, peak),
                       "iterations": res.iterations, "stop_reason": res.stop_reason, "loss": round(res.loss, 6)}
    return out


# The real server ---------------------------------------------------------------------
def measure_server(path: Path, device: str, samples: int, iterations: int, threads: int,
                   timeout: float) -> dict[str, Any]:
    """Serve `path` with `python -m server` and time plans through HTTP."""
    from wm_client import PlanningClient

    options = ["--no-warmup", "--max-num-samples", str(max(samples, 300))]
    with harness.Server(path, threads=threads, device=device, options=options, ready_timeout=timeout) as server, \
            PlanningClient(server.url, timeout=timeout) as client:
        health = client.health()
        size = int(health["model"]["image_size"])
        frames = smooth_frames(2, size, 0)
        proprio = np.zeros(int(health["model"]["proprio_dim"]), dtype=np.float32)
        rows = {}
        for name, its in (("cem_iteration", 1), ("plan", iterations)):
            planner = harness.budget(samples, its, min_iterations=min(5, its))
            t0 = time.perf_counter()
            reply = client.plan(frames[0], frames[1], proprio, proprio, seed=0, planner=planner)
            rows[name] = {"client_seconds": round(time.perf_counter() - t0, 4), "server_timing_ms": reply.get("timing_ms"),
                          "iterations": reply.get("iterations"), "stop_reason": reply.get("stop_reason")}
        return {"ready_seconds": round(server.ready_seconds, 2), **rows, "stats_device": client.stats().get("device"),
                "stats_provenance": (health.get("model") or {}).get("stats_provenance")}


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser("studies.dino_size", __doc__, model=False)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the rollout")
    ap.add_argument("--samples", type=int, help="samples per rollout/iteration (default: 300 on CUDA, 8 on CPU)")
    ap.add_argument("--plan-iterations", type=int, help="iterations of the timed plan (default: 30 CUDA, 2 CPU)")
    ap.add_argument("--no-server", action="store_true", help="skip the HTTP measurement")
    ap.add_argument("--work-dir", type=Path, help="where the artifacts go (default: a temporary folder)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    samples = args.samples or (4 if args.quick else 300 if gpu else 8)
    iterations = args.plan_iterations or (2 if args.quick or not gpu else 30)
    cfg = replace(dino_wm_config(2), **QUICK_DINO) if args.quick else dino_wm_config(14)
    inference = InferenceConfig(dtype=args.dtype, compile=args.compile)
    paper = harness.planner(None)
    result = harness.Result("dino_size", args, device=torch.cuda.get_device_name(device) if gpu else "cpu")
    summary: dict[str, Any] = {
        "samples": samples, "plan_iterations": iterations, "model_config": cfg.name,
        "paper_plan_pflop": round(plan_flops(cfg, paper.horizon, paper.solver().samples, paper.max_iterations).total / 1e15, 4),
        "note": None if gpu or (samples >= 300 and iterations >= 30) else
        "CPU run: fewer samples and iterations than the paper's 300 x 30 (hours on this CPU); rates are comparable, "
        "times are not"}
    size = 512 if args.quick else 2048
    with tempfile.TemporaryDirectory() as tmp:
        root = args.work_dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        paths = {"native": native_artifact(cfg, root / "native.pt"),
                 "imported": imported_artifact(cfg, root / "dino_wm_run")}
        peak = harness.measure_peak(size, device=args.device, dtype=inference.torch_dtype)["peak_flops"]
        for name, path in paths.items():
            model = load_model(path, device=device, inference=inference)
            result.add({"artifact": name, **measure_model(model, samples, iterations, peak)})
            del model
        peak_after = harness.measure_peak(size, device=args.device, dtype=inference.torch_dtype)["peak_flops"]
        summary.update(peak_gflops=round(peak / 1e9, 2), peak_gflops_after=round(peak_after / 1e9, 2))
        if not args.no_server:
            result.add({"artifact": "native", "server": measure_server(paths["native"], args.device, samples,
                                                                       iterations, args.threads, 3600.0)})
    return result.finish(summary)


if __name__ == "__main__":
    sys.exit(main())
