"""A short fixed-seed run gives the same weights, optimiser state and metrics, bit for bit, as the recorded run.

The shipped default model is reproduced bit-exactly by scripts/train_default.sh
(an 11-minute job, not a test). This is its cheap stand-in: a refactor of the
trainer that changes one weight, one batch, one RNG draw or one logged value
fails here. The record (golden/short_run.json) was made by the trainer before
the phases became objects (commit 85bc2c6) and holds a SHA-256 per tensor
(model, decoder, AdamW moments, RNG state) and the metrics rows themselves.

Floating-point results depend on the torch build and the CPU's vector unit,
so the record is compared only where both match it (otherwise: skipped, with
the way to re-record from a trusted commit). One torch thread, so that the
thread count cannot change a reduction order.

Re-record: python -m tests.training.test_golden_run --write   (from a trusted commit)
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from envs.collect import CollectConfig, collect
from envs.dataset import load_dataset
from tests.training.test_trainer import MODEL, PHASE
from training.config import TrainConfig
from training.trainer import Trainer

GOLDEN = Path(__file__).with_name("golden") / "short_run.json"
VOLATILE = {"time", "epoch_seconds"}  # wall-clock fields of a metrics row


def platform() -> dict[str, str]:
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def fingerprint(obj: Any, prefix: str = "") -> dict[str, str]:
    """{path: SHA-256 of a tensor's dtype, shape and bytes | repr of a plain value} of a nested payload."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode() + t.numpy().tobytes()).hexdigest()[:16]
        return {prefix: h}
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for k in sorted(obj, key=str):
            out.update(fingerprint(obj[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (torch.Tensor, dict)) for v in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(fingerprint(v, f"{prefix}[{i}]"))
        return out
    return {prefix: repr(obj)}


def record_of(out: Path) -> dict[str, Any]:
    """What a finished run folder is checked by: metrics rows (no wall-clock fields), model.pt, latest.pt."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    latest = torch.load(out / "latest.pt", weights_only=True)
    latest["state"].pop("history")  # = the metrics rows, with their times
    latest.pop("config")  # holds the temporary folder's paths
    return {"metrics": [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows],
            "model": fingerprint(torch.load(out / "model.pt", weights_only=True)["state_dict"]),
            "latest": fingerprint(latest)}


def golden_runs(root: Path) -> dict[str, Any]:
    """A fresh run (both phases), then a resume from the predictor's best epoch at a new learning rate."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = root / "data"
        collect(data, CollectConfig(episodes=8, steps=12, seed=0), progress=False)
        ds = load_dataset(data)
        dataset = fingerprint({k: torch.from_numpy(np.array(getattr(ds, k))) for k in ("frames", "actions", "proprio")})
        cfg = TrainConfig(dataset=str(data), out=str(root / "run"), model=MODEL, alpha=0.5, encoder=PHASE,
                          predictor=replace(PHASE, epochs=3))
        Trainer(cfg, progress=False).run()
        fresh = record_of(root / "run")
        longer = replace(cfg, predictor=replace(cfg.predictor, epochs=4))
        Trainer(longer, progress=False).run(resume="best", lr=5e-4)
        return {"dataset": dataset, "fresh": fresh,
                "resumed_from_best": record_of(root / "run")}
    finally:
        torch.set_num_threads(prev)


def test_a_short_fixed_seed_run_matches_the_recorded_run_bit_for_bit(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    if golden["platform"] != platform():
        pytest.skip(f"recorded on {golden['platform']}, this is {platform()}: re-record from a trusted commit "
                    "with `python -m tests.training.test_golden_run --write`")
    got = golden_runs(tmp_path)
    assert got["dataset"] == golden["dataset"], "the collected dataset changed (envs/), not the trainer"
    for run in ("fresh", "resumed_from_best"):
        want, have = golden[run], got[run]
        assert have["metrics"] == want["metrics"], run
        for part in ("model", "latest"):
            changed = sorted(k for k in want[part].keys() | have[part].keys() if want[part].get(k) != have[part].get(k))
            assert not changed, f"{run} {part}: {changed[:10]}"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.training.test_golden_run --write")
    with tempfile.TemporaryDirectory() as tmp:
        record = {"platform": platform(), **golden_runs(Path(tmp))}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
