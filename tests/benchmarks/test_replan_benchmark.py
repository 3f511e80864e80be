"""benchmarks.replan --quick: real servers for two planner configs, the closed loop over HTTP on each,
the client's round trip beside the server's own account, and a profile of one plan per config."""

from __future__ import annotations

import json

from benchmarks import replan


def test_quick_run_times_every_request_of_every_config_through_a_real_server(tmp_path):
    out = tmp_path / "replan.json"
    assert replan.main(["--quick", "--configs", "default", "icem_50x10_w3", "--profile", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert sorted(r["config"] for r in rows) == ["default", "icem_50x10_w3"]  # one near episode each
    for r in rows:
        first, *replans = r["requests"]
        assert first["warm_start"] is False and all(q["warm_start"] for q in replans)
        assert len(r["requests"]) >= 1 and r["steps"] >= 1
        for q in r["requests"]:  # the client waited at least as long as the server says it worked
            assert q["round_trip_ms"] >= q["total_ms"] >= q["plan_ms"] > 0
    summary = result["summary"]["by_goals"]["near"]
    assert set(summary) == {"default", "icem_50x10_w3"}
    for name in summary:
        sent = sum(len(r["requests"]) for r in rows if r["config"] == name)
        assert summary[name]["all"]["round_trip_ms"]["n"] == sent and summary[name]["successes"] <= 1
    prof = result["summary"]["profile"]["icem_50x10_w3"]
    assert abs(sum(prof["ops"].values()) - 1) < 1e-6 and 0 < prof["inside_ops_share"] <= 1.5
    assert prof["calls_per_iteration"] > 10
    table = replan.table(result)
    assert "`icem_50x10_w3`" in table and "ms per iteration" in table


def test_server_flags_spell_nested_settings_as_the_server_cli_does():
    assert replan.server_flags({"max_iterations": 3, "icem.samples": 50}) == [
        "--planner.max-iterations", "3", "--planner.icem.samples", "50"]
