"""benchmarks.closed_loop: the example client's wall evaluation in-process, same lines and summary keys."""

from __future__ import annotations

import json

import pytest

from benchmarks import closed_loop
from benchmarks.harness import find_model


def test_in_process_closed_loop_prints_episodes_and_the_clients_summary(capsys):
    if find_model(None) is None:
        pytest.skip("no shipped wall model")
    planner = '{"num_samples": 16, "topk": 4, "opt_steps": 3, "min_iterations": 2}'
    assert closed_loop.main(["--episodes", "1", "--seed", "0", "--planner", planner]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0].startswith("episode   0: ")  # the example client's lines
    out = json.loads(captured.out)
    assert out["benchmark"] == "closed_loop" and [r["episode"] for r in out["rows"]] == [0]
    summary = out["summary"]
    assert summary["episodes"] == 1 and summary["plans"] >= 1 and summary["planner"]["num_samples"] == 16
    assert {"goals", "success_rate", "mean_steps", "mean_final_distance", "plan_ms_p50"} <= set(summary)
