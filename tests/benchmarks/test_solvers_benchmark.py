"""benchmarks.solvers runs in --quick mode, reports every cell, and prices gradient steps above forward rollouts."""

from __future__ import annotations

import json

import pytest

from benchmarks import solvers
from benchmarks.harness import find_model
from models.flops import encoder_flops, rollout_flops
from models.testing import tiny_model
from planning import PlannerConfig

CELLS = ["cem_50x10", "icem_30x6", "gradient_4x15"]


def test_quick_closed_loop_writes_one_line_per_cell_and_a_plot(tmp_path, capsys):
    if find_model(None) is None:
        pytest.skip("no shipped wall model")
    out = tmp_path / "cells.json"
    assert solvers.main(["--quick", "--cells", *CELLS, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["cell"] for r in rows] == CELLS
    for r in rows:
        assert 0.0 <= r["success_rate"] <= 1.0 and r["plans"] >= 1
        assert r["gflops_per_plan"] > 0 and r["plan_ms_p50"] > 0
        assert sum(r["stop_reasons"].values()) == r["plans"]
    png = tmp_path / "plot.png"
    capsys.readouterr()
    assert solvers.main(["--report", str(out), "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + len(CELLS) and all(f"`{c}`" in "".join(lines) for c in CELLS)


def test_gflops_count_forward_and_backward_rollouts_and_one_encoding():
    model = tiny_model()
    cfg = PlannerConfig(horizon=5)
    fwd, before = rollout_flops(model.config, 5, "cached").total, rollout_flops(model.config, 5, "recompute").total
    expected = (10 * fwd + 4 * 3 * before + encoder_flops(model.config)) / 1e9
    assert solvers.gflops(model, cfg, rollouts=10, grad_rollouts=4) == pytest.approx(expected)
    assert before >= fwd  # the out-of-place rollout recomputes its windows
