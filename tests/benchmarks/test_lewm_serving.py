"""benchmarks.lewm_serving: client latency and sessions under 1 s through the real server, for a LeWM
artifact that carries an import's planner recommendation (--quick: the tiny LeWM)."""

from __future__ import annotations

import json

from benchmarks import lewm_serving
from planning import PlannerConfig


def test_budget_overrides_run_every_iteration():
    cfg = PlannerConfig().updated(lewm_serving.parse_budget("cem:48x4"))
    assert (cfg.method, cfg.max_iterations, cfg.min_iterations) == ("cem", 4, 4)
    assert cfg.solvers["cem"].samples == 48


def test_quick_run_reports_default_latency_budgets_and_sessions(tmp_path):
    out = tmp_path / "serving.json"
    assert lewm_serving.main(["--quick", "--out", str(out), "--replans", "2", "--default-replans", "1"]) == 0
    result = json.loads(out.read_text())
    rows, summary = result["rows"], result["summary"]
    assert [r["phase"] for r in rows][:3] == ["default", "budget", "budget"]
    default = rows[0]
    assert default["errors"] == 0 and default["replan_round_trip_ms"]["n"] == 1
    # the server plans with the artifact's recommendation (LeWM's paper CEM) on top of the CPU preset
    assert summary["server_planner"]["method"] == "cem" and summary["server_planner"]["max_iterations"] == 30
    assert summary["server_planner"]["cem"]["samples"] == 300
    for r in rows[1:3]:
        assert r["errors"] == 0 and {x["iterations"] for x in r["records"]} == {int(r["budget"].split("x")[1])}
    assert summary["largest_sessions_under_1s"] >= 1 and summary["budget_under_1s"] is not None
