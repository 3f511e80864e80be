"""The one episode runner (envs.episodes) on both environments, over LocalClient and over a real server."""

from __future__ import annotations


import numpy as np
import pytest

from envs import WallEnv
from envs.episodes import (
    PUSHT_SEED_STRIDE, run_episode, wall_distance, wall_episodes, wall_line, wall_summary,
)
from envs.tasks import Task, wall_tasks
from models import load_model
from models.testing import tiny_model
from planning import PlannerConfig
from server.local import LocalClient
from tests.server.conftest import FAST_PLANNER, model_path, server_url  # noqa: F401
from wm_client import LoopConfig, PlanningClient

CFG = PlannerConfig.cpu_preset().updated(FAST_PLANNER)
WALL_KEYS = {"goals", "episodes", "seed", "success_rate", "mean_steps", "mean_final_distance", "plan_ms_p50",
             "plan_ms_p95", "plans"}


@pytest.fixture(scope="module")
def client():
    return LocalClient(tiny_model(seed=0, action_low=[-2.0] * 2, action_high=[2.0] * 2), CFG, keep_replies=True)


def test_an_episode_stops_at_success_or_at_its_budget_and_the_env_moved(client):
    env = WallEnv()
    task = Task(np.array([10.0, 10.0]), np.array([20.0, 12.0]))
    r = run_episode(client, env, task, LoopConfig(model_steps=3, seed=0), success=lambda s, g: False)
    assert (r.success, r.steps, r.requests) == (False, 3, 3)
    np.testing.assert_array_equal(r.final_state, env.get_state())
    assert not np.array_equal(r.final_state, task.start) and len(r.plan_ms) == 3
    r = run_episode(client, env, task, LoopConfig(model_steps=3, seed=0), success=lambda s, g: True)
    assert (r.success, r.steps, r.requests) == (True, 1, 1)  # checked after every model step


def test_wall_episodes_chain_one_seed_counter_and_repeat_exactly(client):
    client.replies.clear()
    results = list(wall_episodes(client, 3, seed=4, goals="near", budget=2))
    seeds = [r["seed"] for r in client.replies]
    assert seeds == list(range(5, 5 + sum(r.requests for r in results)))  # as the old evaluation's one planner
    assert [r.task.start.tolist() for r in results] == [t.start.tolist() for t in wall_tasks("near", 3, seed=4)]
    again = list(wall_episodes(client, 3, seed=4, goals="near", budget=2))
    for r, s in zip(results, again):
        np.testing.assert_array_equal(r.final_state, s.final_state)
    summary = wall_summary(results, "near", 4)
    assert set(summary) == WALL_KEYS and summary["plans"] == len(seeds)
    assert summary["mean_final_distance"] == pytest.approx(np.mean([wall_distance(r) for r in results]))
    assert wall_line(0, results[0]).startswith("episode   0: ")


def test_the_same_episodes_over_http_and_in_process(model_path, server_url):  # noqa: F811
    """Same artifact, planner and seeds: the runner moves the agent the same through a server as in-process."""
    local = LocalClient(load_model(model_path), CFG)
    with PlanningClient(server_url) as remote:
        over_http = list(wall_episodes(remote, 2, seed=0, goals="near", budget=3))
    in_process = list(wall_episodes(local, 2, seed=0, goals="near", budget=3))
    for a, b in zip(over_http, in_process):
        assert (a.steps, a.success, a.requests) == (b.steps, b.success, b.requests)
        np.testing.assert_allclose(a.final_state, b.final_state, atol=1e-3)


def test_pusht_episodes_run_the_same_loop_with_per_episode_seeds():
    pytest.importorskip("gym_pusht")
    from envs.episodes import pusht_episodes, pusht_line, pusht_summary

    client = LocalClient(tiny_model(seed=0), CFG, keep_replies=True)
    results = list(pusht_episodes(client, 2, seed=3, budget=2))
    assert [r.steps for r in results] == [2 if not r.success else r.steps for r in results]
    base, stride = PUSHT_SEED_STRIDE
    firsts = [rep["seed"] for rep in client.replies if not rep["warm_start"]]
    assert firsts[:2] == [3 * base + 1, 3 * base + stride + 1]
    summary = pusht_summary(results, "tiny", seed=3, budget=2)
    assert summary["env"] == "pusht" and summary["episodes"] == 2 and summary["plans"] == len(client.replies)
    assert "pos_err=" in pusht_line(1, results[1])
