"""The client examples run against a real server (so they do not rot)."""

from __future__ import annotations

from client_examples.client import PlanningClient
from client_examples.wall_mpc import run


def test_wall_mpc_loop_runs(server_url, capsys):
    with PlanningClient(server_url) as client:
        summary = run(client, steps=3, execute=1, seed=0)
        assert summary["plans"] >= 1 and summary["final_distance"] >= 0
        assert client.stats()["sessions"]["deleted"] >= 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and '"distance"' in lines[0]
