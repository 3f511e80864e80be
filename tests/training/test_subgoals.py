"""The subgoal-graph builder reads its dataset through envs.dataset: node frames per episode, and a
directory that is not a dataset refused with the reader's message (the graph itself: tests/planning)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from envs.dataset import Episode, load_dataset, write_dataset
from models import DEFAULT_MODEL_PATH
from training.subgoals import main, node_frames


def _episode(t: int) -> Episode:
    actions = np.ones((t, 2), dtype=np.float32)
    actions[-1] = 0
    return Episode(frames=np.zeros((t, 4, 4, 3), dtype=np.uint8), actions=actions,
                   proprio=np.zeros((t, 2), dtype=np.float32))


def test_nodes_are_every_stride_th_frame_of_each_episode_from_its_first(tmp_path: Path):
    ds = load_dataset(write_dataset(tmp_path / "ds", [_episode(t) for t in (5, 1, 7)], {"env": "toy"}))
    idx, eps = node_frames(ds, stride=2)
    np.testing.assert_array_equal(idx, [0, 2, 4, 5, 6, 8, 10, 12])
    np.testing.assert_array_equal(eps, [0, 0, 0, 1, 2, 2, 2, 2])
    idx, eps = node_frames(ds, stride=3, max_episodes=2)
    np.testing.assert_array_equal(idx, [0, 3, 5])
    np.testing.assert_array_equal(eps, [0, 0, 1])
    assert node_frames(ds, stride=1, max_episodes=10)[0].tolist() == list(range(13))


def test_a_folder_that_is_not_a_dataset_is_refused_with_the_readers_message(tmp_path: Path, capsys):
    (tmp_path / "frames.npy").write_bytes(b"")
    code = main(["build", "--model", str(DEFAULT_MODEL_PATH), "--dataset", str(tmp_path),
                 "--out", str(tmp_path / "g.pt")])
    assert code == 2
    assert "missing" in capsys.readouterr().err and not (tmp_path / "g.pt").exists()
