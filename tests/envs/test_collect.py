import numpy as np
import pytest

from envs.collect import CollectConfig, collect, crosses_wall, main, sample_actions
from envs.dataset import load_dataset
from envs.wall import WallEnv


def test_collection_is_deterministic_for_a_seed(tmp_path):
    cfg = CollectConfig(episodes=3, steps=15, seed=4)
    a = load_dataset(collect(tmp_path / "a", cfg, progress=False)["path"])
    b = load_dataset(collect(tmp_path / "b", cfg, progress=False)["path"])
    for name in ("frames", "actions", "proprio", "states"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = load_dataset(collect(tmp_path / "c", CollectConfig(3, 15, seed=5), progress=False)["path"])
    assert not np.array_equal(a.states, c.states)


def test_collected_data_matches_the_env(tmp_path):
    s = collect(tmp_path / "d", CollectConfig(episodes=2, steps=10, seed=0), progress=False)
    ds = load_dataset(s["path"])
    assert ds.num_frames == s["frames"] == 22 and list(ds.episode_lengths) == [11, 11]
    ep = ds.episode(1)
    env = WallEnv()
    env.reset(state=ep.states[0])
    for t in range(10):  # replaying the stored actions reproduces frames and states
        obs, info = env.step(ep.actions[t].astype(np.float64))
        np.testing.assert_array_equal(obs["visual"], ep.frames[t + 1])
        np.testing.assert_allclose(info["state"], ep.states[t + 1], atol=1e-5)
    np.testing.assert_array_equal(ep.actions[-1], 0)
    assert ds.meta["env"] == "wall" and ds.meta["generator"]["seed"] == 0


def test_persistent_actions_cross_the_wall(tmp_path):
    cfg = CollectConfig(episodes=30, steps=60, seed=0, persistent_prob=1.0)
    s = collect(tmp_path / "x", cfg, progress=False)
    ds = load_dataset(s["path"])
    env = WallEnv()
    crossed = [crosses_wall(env, ds.episode(i).states) for i in range(ds.num_episodes)]
    assert s["cross_fraction"] == np.mean(crossed) > 0
    starts = ds.states[ds.episode_starts]
    assert {env.side(x) for x in starts} == {"left", "right"}


def test_persistent_segments_hold_one_action():
    rng = np.random.default_rng(0)
    cfg = CollectConfig(1, 40, hold_min=5, hold_max=5, persistent_prob=1.0)
    acts = sample_actions(cfg, 2.0, rng)
    assert acts.shape == (40, 2) and np.abs(acts).max() <= 2.0
    assert all(len(np.unique(acts[i : i + 5], axis=0)) == 1 for i in range(0, 40, 5))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="persistent_prob"):
        CollectConfig(1, 1, persistent_prob=1.5)


def test_cli_prints_a_summary(tmp_path, capsys):
    main(["--out", str(tmp_path / "cli"), "--episodes", "2", "--steps", "5", "--seed", "1"])
    out = capsys.readouterr().out
    assert "2 episodes, 12 frames" in out and "cross the wall" in out
