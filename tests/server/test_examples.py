"""The client examples run against a real server (so they do not rot)."""

from __future__ import annotations

import json

import pytest

from client_examples import closed_loop
from wm_client import PlanningClient


def test_closed_loop_evaluation_runs_over_http(server_url):
    with PlanningClient(server_url) as client:
        summary = closed_loop.evaluate(client, episodes=2, seed=0, goals="near", out=None)
        assert client.stats()["sessions"]["deleted"] >= 2  # every episode ends its session
    assert summary["episodes"] == 2 and summary["plans"] >= 2
    assert 0.0 <= summary["success_rate"] <= 1.0 and summary["mean_final_distance"] >= 0


def test_closed_loop_cli_prints_a_line_per_episode_and_a_final_json_line(server_url, capsys):
    assert closed_loop.main(["--url", server_url, "--episodes", "2", "--seed", "1", "--execute", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == ["episode   0", "episode   1"]
    summary = json.loads(lines[-1])
    assert {"goals", "episodes", "seed", "success_rate", "mean_steps", "mean_final_distance", "plan_ms_p50",
            "plan_ms_p95", "plans"} <= set(summary)


def test_closed_loop_talks_http_only():
    with pytest.raises(SystemExit):  # the in-process mode moved to benchmarks.closed_loop
        closed_loop.main(["--model", "models/default/wall.pt"])
