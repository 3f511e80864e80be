"""The gym-pusht adapter and its collector (skipped without the `pusht` extra)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gym_pusht")

from envs import load_dataset  # noqa: E402
from envs.collect_pusht import PushTCollectConfig, collect  # noqa: E402
from envs.pusht import PushTEnv, angle_error, is_success  # noqa: E402


@pytest.fixture(scope="module")
def env() -> PushTEnv:
    return PushTEnv(image_size=32)


def test_set_state_is_exact_whatever_the_angle(env: PushTEnv) -> None:
    # gym-pusht's own reset_to_state writes the angle after the position and
    # moves the block about its centre of gravity; ours must land exactly.
    state = np.array([100.0, 120.0, 300.0, 250.0, 2.5, 3.0, -4.0])
    env.set_state(state)
    np.testing.assert_allclose(env.get_state(), state, atol=1e-9)


def test_steps_are_deterministic_from_a_set_state(env: PushTEnv) -> None:
    rng = np.random.default_rng(0)
    start, actions = env.sample_state(rng), rng.uniform(-40, 40, (8, 2))
    ends = []
    for _ in range(2):
        env.reset(start)
        for a in actions:
            env.step(a)
        ends.append(env.get_state())
    np.testing.assert_array_equal(ends[0], ends[1])
    assert not np.allclose(ends[0][:2], start[:2])  # the agent moved


def test_observations_are_small_rgb_frames_and_the_agent_position(env: PushTEnv) -> None:
    obs = env.reset(np.array([200.0, 210.0, 300.0, 300.0, 0.3]))
    assert obs["visual"].shape == (32, 32, 3) and obs["visual"].dtype == np.uint8
    np.testing.assert_allclose(obs["proprio"], [200.0, 210.0])
    _, info = env.step(np.array([100.0, -100.0]))
    np.testing.assert_array_equal(info["action"], [40.0, -40.0])  # clipped to max_step


def test_success_uses_dino_wm_thresholds() -> None:
    goal = np.array([100.0, 100.0, 200.0, 200.0, 0.1])
    assert is_success(goal + [10, 0, 0, 10, 0], goal)  # |(10, 0, 0, 10)| = 14 < 20
    assert not is_success(goal + [15, 0, 0, 15, 0], goal)  # 21 px
    assert is_success(goal + [0, 0, 0, 0, math.pi / 10], goal)
    assert not is_success(goal + [0, 0, 0, 0, math.pi / 8], goal)
    assert angle_error(0.05, 2 * math.pi - 0.05) == pytest.approx(0.1)  # wraps around


def test_the_collector_writes_the_dataset_format(tmp_path: Path) -> None:
    cfg = PushTCollectConfig(episodes=3, steps=6, seed=1, image_size=32)
    summary = collect(tmp_path / "pusht", cfg, progress=False)
    ds = load_dataset(summary["path"])
    assert (ds.num_episodes, ds.num_frames) == (3, 21)
    assert ds.frames.shape[1:] == (32, 32, 3) and ds.states.shape[1] == 7
    assert ds.meta["env"] == "pusht"
    np.testing.assert_allclose(ds.proprio, ds.states[:, :2], atol=1e-4)
    assert np.abs(ds.actions).max() <= 40.0
    again = load_dataset(collect(tmp_path / "again", cfg, progress=False)["path"])
    np.testing.assert_array_equal(again.frames, ds.frames)  # same seed, same data
