"""`training.stats --rule dino-wm` reproduces the statistics DINO-WM's loaders normalise
with: every step of every loaded rollout (wall), each rollout's first seq_len steps
(point maze), before any train/val split; PushT's published constants. The expected
values are computed here with numpy from the loaders' description (ddof=1: torch.std)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models import NormStats
from models.dino_wm.published import PUSHT_ACTION_MEAN, PUSHT_PROPRIO_STD
from training.stats import dino_wm_stats, main


def write_wall(tmp_path, n=6, t=9, seed=0):
    g = np.random.default_rng(seed)
    states = g.normal([30.0, 20.0, 0.0, 0.0], [10.0, 5.0, 1.0, 2.0], size=(n, t, 4)).astype(np.float32)
    actions = g.normal([0.1, -0.2], [0.5, 1.5], size=(n, t, 2)).astype(np.float32)
    torch.save(torch.from_numpy(states), tmp_path / "states.pth")
    torch.save(torch.from_numpy(actions), tmp_path / "actions.pth")
    return states, actions


def test_wall_rule_is_over_every_step_of_the_loaded_rollouts(tmp_path):
    states, actions = write_wall(tmp_path)
    s = dino_wm_stats("wall", tmp_path)
    np.testing.assert_allclose(s.action_mean, actions.reshape(-1, 2).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.action_std, actions.reshape(-1, 2).std(0, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(s.proprio_std, states.reshape(-1, 4).std(0, ddof=1), rtol=1e-5)
    assert s.provenance["split"] == "all_loaded" and s.provenance["num_episodes"] == 6
    assert s.provenance["num_frames"] == 6 * 9 and "before get_train_val_sliced" in s.provenance["rule"]
    # n_rollout: the loader keeps the first n rollouts only
    s4 = dino_wm_stats("wall", tmp_path, n_rollout=4)
    np.testing.assert_allclose(s4.action_mean, actions[:4].reshape(-1, 2).mean(0), rtol=1e-5, atol=1e-6)
    assert s4.provenance["num_episodes"] == 4


def test_point_maze_rule_reads_each_rollout_up_to_its_length(tmp_path):
    g = np.random.default_rng(1)
    lengths = np.array([5, 9, 3, 7])
    states = g.normal(size=(4, 9, 4)).astype(np.float32)
    actions = g.normal(size=(4, 9, 2)).astype(np.float32)
    for i, n in enumerate(lengths):  # padding past seq_len must not count
        states[i, n:], actions[i, n:] = 1e3, -1e3
    torch.save(torch.from_numpy(states.astype(np.float64)), tmp_path / "states.pth")  # loader casts to float32
    torch.save(torch.from_numpy(actions), tmp_path / "actions.pth")
    torch.save(torch.from_numpy(lengths), tmp_path / "seq_lengths.pth")
    s = dino_wm_stats("point_maze", tmp_path)
    valid_a = np.concatenate([actions[i, :n] for i, n in enumerate(lengths)])
    valid_s = np.concatenate([states[i, :n] for i, n in enumerate(lengths)])
    np.testing.assert_allclose(s.action_mean, valid_a.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.proprio_std, valid_s.std(0, ddof=1), rtol=1e-5)
    assert s.provenance["num_frames"] == lengths.sum()


def test_pusht_uses_the_published_constants_in_its_env_units(tmp_path):
    s = dino_wm_stats("pusht")
    np.testing.assert_allclose(s.action_mean, PUSHT_ACTION_MEAN)
    np.testing.assert_allclose(s.proprio_std, PUSHT_PROPRIO_STD, rtol=1e-6)
    assert s.provenance["split"] == "published" and "pusht_dset.py" in s.provenance["source"]
    pixels = dino_wm_stats("pusht", action_scale=100.0, with_velocity=False)
    np.testing.assert_allclose(pixels.action_mean, np.asarray(PUSHT_ACTION_MEAN) * 100, rtol=1e-6)
    assert pixels.proprio_mean.numel() == 2 and pixels.provenance["action_scale"] == 100.0


def test_cli_writes_a_file_the_artifact_accepts(tmp_path):
    write_wall(tmp_path)
    out = tmp_path / "stats.json"
    assert main([str(tmp_path), "--rule", "dino-wm", "--env", "wall", "--out", str(out)]) == 0
    stats = NormStats.from_dict(json.loads(out.read_text()))
    assert stats.provenance["split"] == "all_loaded"


@pytest.mark.parametrize("args, message", [
    (["--rule", "dino-wm"], "needs --env"),
    (["--rule", "dino-wm", "--env", "wall"], "give its data folder"),
    (["/nonexistent", "--rule", "dino-wm", "--env", "wall"], "states.pth not found"),
])
def test_cli_says_what_is_missing(tmp_path, capsys, args, message):
    assert main([*args, "--out", str(tmp_path / "s.json")]) == 2
    assert message in capsys.readouterr().err
