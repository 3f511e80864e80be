"""The client examples run against a real server (so they do not rot)."""

from __future__ import annotations

from client_examples.closed_loop import HttpPlanner, evaluate
from client_examples.client import PlanningClient


def test_closed_loop_evaluation_runs_over_http(server_url):
    planner = HttpPlanner(server_url, seed=0)
    summary = evaluate(planner, episodes=2, seed=0, goals="near", out=None)
    assert summary["episodes"] == 2 and summary["plans"] >= 2
    assert 0.0 <= summary["success_rate"] <= 1.0 and summary["mean_final_distance"] >= 0
    assert PlanningClient(server_url).stats()["sessions"]["deleted"] >= 1  # the first episode's session
