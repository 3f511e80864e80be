"""PushT closed loop through a real server (tiny random model; skipped without the `pusht` extra)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

pytest.importorskip("gym_pusht")

from client_examples import pusht_eval  # noqa: E402
from envs.pusht import PushTEnv, is_success  # noqa: E402
from envs.tasks import pusht_tasks  # noqa: E402
from wm_client import PlanningClient  # noqa: E402


def test_tasks_follow_dino_wm_goal_protocol() -> None:
    env = PushTEnv(image_size=32)
    tasks = pusht_tasks(env, 3, seed=0, frameskip=2)
    again = pusht_tasks(env, 3, seed=0, frameskip=2)
    for t, u in zip(tasks, again):
        np.testing.assert_array_equal(t.goal, u.goal)  # deterministic for a seed
        assert not is_success(t.start, t.goal)


def test_evaluation_runs_closed_loop_and_reports_a_success_rate(server_url: str) -> None:
    out = io.StringIO()
    with PlanningClient(server_url) as client:
        summary = pusht_eval.evaluate(client, episodes=2, seed=0, budget=2, out=out)
    assert summary["episodes"] == 2 and 0.0 <= summary["success_rate"] <= 1.0
    assert summary["plans"] >= 2
    assert len(out.getvalue().splitlines()) == 2
    json.dumps(summary)  # the final line is JSON


def test_the_cli_prints_a_final_json_line(server_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert pusht_eval.main(["--url", server_url, "--episodes", "1", "--budget", "1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "success_rate" in json.loads(last)
