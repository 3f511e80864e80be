"""benchmarks.lewm_peer: stable-worldmodel's CEMSolver + LeWM.get_cost beside this project's planner.
Skips without a prepared reference that holds the solvers (python -m benchmarks.lewm_reference
--prepare .peers/lewm, or $LEWM_REFERENCE)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks import lewm_peer
from benchmarks.problems import ROOT


@pytest.fixture(scope="module")
def reference():
    found = lewm_peer.find_planner_reference(None)
    if found is None:
        pytest.skip("no LeWM reference with stable-worldmodel's solvers "
                    "(python -m benchmarks.lewm_reference --prepare .peers/lewm, or $LEWM_REFERENCE)")
    return found


def test_without_a_reference_the_benchmark_says_how_to_prepare_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LEWM_REFERENCE", str(tmp_path))
    monkeypatch.setattr(lewm_peer.lewm_reference, "DEFAULT_DIR", tmp_path / "absent")
    assert lewm_peer.main(["--quick", "--reference", str(tmp_path)]) == 2
    assert "--prepare" in capsys.readouterr().err


def test_quick_run_plans_every_problem_with_both_planners_on_the_same_weights(reference, tmp_path, capsys):
    # in its own process: the benchmark imports the reference's modules, which must not enter
    # this one (tests/models/test_lewm_reference.py checks that the exactness check keeps them out)
    out = tmp_path / "lewm_peer.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.lewm_peer", "--quick", "--reference", str(reference),
                           "--out", str(out)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows, summary = result["rows"], result["summary"]
    assert sorted(r["cell"] for r in rows) == sorted(lewm_peer.CELLS)
    assert all(r["seconds"] > 0 and r["objective"] >= 0 for r in rows)
    # the import matches the reference, and its own cost of its plan is the common yardstick's
    assert summary["exactness"]["ok"]
    assert summary["objective_agreement_max_rel"] < 1e-3
    swm = next(r for r in rows if r["cell"] == "swm_cem_30")
    assert swm["iterations"] == lewm_peer.QUICK_BUDGET[2] and swm["rollouts"] == 16
    assert set(summary["cells"]) == set(lewm_peer.CELLS) and "met" in summary["target"]
    assert {"swm_get_cost", "ours_iteration"} <= set(summary["profile_one_iteration"])
    assert not any(m.startswith(("transformers", "lewm_reference_", "stable_worldmodel")) for m in sys.modules)
    capsys.readouterr()
    assert lewm_peer.main(["--table", str(out)]) == 0
    table = capsys.readouterr().out
    assert all(f"`{c}`" in table for c in lewm_peer.CELLS)


def test_summary_ratio_is_the_peer_median_over_the_cell_median():
    rows = [{"cell": c, "problem": p, "seconds": s, "cpu_seconds": s, "objective": o, "iterations": 3}
            for c, p, s, o in [("swm_cem_30", 0, 10.0, 0.2), ("swm_cem_30", 1, 12.0, 0.1),
                               ("ours_default", 0, 1.0, 0.1), ("ours_default", 1, 3.0, 0.2)]]
    s = lewm_peer.summarize(rows)
    assert s["cells"]["ours_default"]["speedup"] == pytest.approx(11.0 / 2.0)
    assert s["cells"]["ours_default"]["problems_at_or_below_swm"] == 1
    assert s["target"]["met"]  # 5.5x at an equal median objective
