"""Evaluation tasks: the same tasks for a seed everywhere, none solved at its start, the goal protocols kept."""

from __future__ import annotations

import numpy as np
import pytest

from envs import WallEnv, is_success
from envs.tasks import WALL_BUDGETS, wall_tasks


@pytest.mark.parametrize("kind", sorted(WALL_BUDGETS))
def test_wall_tasks_are_deterministic_and_unsolved_at_the_start(kind: str) -> None:
    tasks, again = wall_tasks(kind, 6, seed=3), wall_tasks(kind, 6, seed=3)
    assert len(tasks) == 6
    for t, u in zip(tasks, again):
        np.testing.assert_array_equal(t.start, u.start)
        np.testing.assert_array_equal(t.goal, u.goal)
        assert not is_success(t.start, t.goal)
    assert any(not np.array_equal(t.goal, u.goal) for t, u in zip(tasks, wall_tasks(kind, 6, seed=4)))


def test_near_goals_are_reachable_in_five_model_steps_and_far_goals_cross_the_wall_often() -> None:
    env = WallEnv()
    max_move = 5 * 5 * env.layout.max_step * np.sqrt(2)  # 5 model steps x frameskip 5 at most max_step per axis
    assert all(np.linalg.norm(t.goal - t.start) <= max_move + 1e-6 for t in wall_tasks("near", 20, seed=0, env=env))
    wall_x = env.layout.wall_center_x
    crossing = [(t.start[0] - wall_x) * (t.goal[0] - wall_x) < 0 for t in wall_tasks("far", 40, seed=0, env=env)]
    assert 0.25 < np.mean(crossing) < 0.75  # "about half must cross through the door"


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="goals='medium'"):
        wall_tasks("medium", 1, seed=0)
