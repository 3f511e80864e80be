import time

import numpy as np
import pytest

from envs.wall import (
    AGENT_RGB,
    BACKGROUND_RGB,
    WALL_RGB,
    WallEnv,
    WallLayout,
    is_success,
    success_mask,
)

L = WallLayout()
R = L.agent_radius


def _push(env: WallEnv, action, n: int) -> list[dict]:
    return [env.step(np.asarray(action, dtype=np.float64))[1] for _ in range(n)]


def test_reset_and_steps_are_deterministic_for_a_seed():
    rng = np.random.default_rng(1)
    actions = rng.uniform(-3, 3, size=(50, 2))
    runs = []
    for _ in range(2):
        env = WallEnv()
        obs = env.reset(seed=7)
        frames, states = [obs["visual"]], [env.get_state()]
        for a in actions:
            obs, info = env.step(a)
            frames.append(obs["visual"])
            states.append(info["state"])
        runs.append((np.stack(frames), np.stack(states)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(WallEnv().reset(seed=8)["proprio"], runs[0][1][0])


@pytest.mark.parametrize(
    "start, push, side",
    [
        ((20.0, 10.0), (2.0, 0.0), "left"),
        ((45.0, 55.0), (-2.0, 0.0), "right"),
        ((20.0, 50.0), (2.0, 0.5), "left"),  # a diagonal push slides down, away from the door
    ],
)
def test_wall_blocks_motion_outside_the_door(start, push, side):
    env = WallEnv()
    env.reset(state=np.array(start))
    infos = _push(env, push, 30)
    s = env.get_state()
    assert env.side(s) == side
    assert infos[-1]["blocked"]
    # The disc touches (within one sub-step) but never overlaps the wall.
    gap = L.wall_x0 - R - s[0] if side == "left" else s[0] - (L.wall_x1 + R)
    assert 0.0 <= gap <= L.substep + 1e-9


def test_door_lets_the_agent_through():
    env = WallEnv()
    env.reset(state=np.array([15.0, L.door_center_y]))
    _push(env, (2.0, 0.0), 25)
    s = env.get_state()
    assert env.side(s) == "right" and s[0] > L.wall_x1 + R


def test_diagonal_push_slides_along_the_wall_into_the_door():
    env = WallEnv()
    env.reset(state=np.array([20.0, 12.0]))
    _push(env, (2.0, 1.0), 40)
    assert env.side(env.get_state()) == "right"


def test_random_walk_never_overlaps_wall_or_leaves_room():
    env = WallEnv(seed=0)
    rng = np.random.default_rng(0)
    states = [env.step(a)[1]["state"] for a in rng.uniform(-2, 2, size=(1500, 2))]
    assert env.is_free(np.stack(states)).all()


def test_action_is_clipped_per_axis():
    env = WallEnv()
    env.reset(state=np.array([10.0, 32.0]))
    _, info = env.step(np.array([10.0, -0.5]))
    np.testing.assert_allclose(env.get_state(), [10.0 + L.max_step, 31.5])
    np.testing.assert_array_equal(info["action"], [L.max_step, -0.5])
    assert not info["blocked"]


def test_step_rejects_bad_actions():
    env = WallEnv(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0]))


def test_get_set_state_round_trip_renders_identically():
    a, b = WallEnv(seed=1), WallEnv(seed=2)
    _push(a, (1.3, -0.7), 5)
    b.set_state(a.get_state())
    np.testing.assert_array_equal(a.render(), b.render())
    np.testing.assert_array_equal(a.proprio(), b.proprio())


def test_render_of_another_state_leaves_env_untouched():
    env = WallEnv(seed=3)
    before, frame = env.get_state(), env.render()
    goal = np.array([50.0, 50.0])
    np.testing.assert_array_equal(env.render(goal), WallEnv(seed=9).render(goal))
    np.testing.assert_array_equal(env.get_state(), before)
    np.testing.assert_array_equal(env.render(), frame)


def test_set_state_rejects_invalid_states():
    env = WallEnv(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.set_state(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        env.set_state(np.array([np.inf, 10.0]))
    with pytest.raises(ValueError, match="not free"):
        env.set_state(np.array([32.0, 5.0]))  # inside the wall
    with pytest.raises(ValueError, match="not free"):
        env.set_state(np.array([1.0, 20.0]))  # disc crosses the room's edge


def test_render_shape_dtype_colours_and_agent_position():
    env = WallEnv()
    env.reset(state=np.array([10.3, 50.7]))
    img = env.render()
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert tuple(img[50, 10]) == AGENT_RGB  # row = y, column = x
    assert tuple(img[50, 20]) == BACKGROUND_RGB
    assert tuple(img[5, 31]) == WALL_RGB
    assert tuple(img[int(L.door_center_y), 31]) == BACKGROUND_RGB  # the door is open
    np.testing.assert_allclose(env.proprio(), [10.3, 50.7], rtol=1e-6)
    assert env.proprio().dtype == np.float32


def test_success_threshold():
    goal = np.array([40.0, 40.0])
    assert is_success(np.array([41.0, 41.0]), goal)
    assert not is_success(np.array([44.0, 40.0]), goal)
    assert is_success(np.array([44.0, 40.0]), goal, tol=5.0)
    mask = success_mask(np.array([[40.0, 42.0], [50.0, 40.0]]), goal)
    np.testing.assert_array_equal(mask, [True, False])


def test_sample_free_state_is_free_and_covers_both_sides():
    env = WallEnv()
    rng = np.random.default_rng(0)
    states = np.stack([env.sample_free_state(rng) for _ in range(300)])
    assert env.is_free(states).all()
    sides = {env.side(s) for s in states}
    assert sides == {"left", "right"}
    assert states.min() >= R and states.max() <= L.size - R


def test_layout_rejects_a_door_narrower_than_the_agent():
    with pytest.raises(ValueError, match="door_height"):
        WallLayout(door_height=5.0)


def test_render_is_cheap():
    env = WallEnv(seed=0)
    env.render()
    t0 = time.perf_counter()
    for _ in range(200):
        env.render()
    per_frame = (time.perf_counter() - t0) / 200
    assert per_frame < 1e-3, f"render took {per_frame * 1e3:.3f} ms per frame"
