import json
from pathlib import Path

import numpy as np
import pytest

from envs.dataset import DatasetError, Episode, load_dataset, write_dataset

META = {"env": "toy", "seed": 0}


def _episode(rng: np.random.Generator, t: int, states: bool = True) -> Episode:
    actions = rng.standard_normal((t, 2)).astype(np.float32)
    actions[-1] = 0
    return Episode(
        frames=rng.integers(0, 256, size=(t, 8, 6, 3), dtype=np.uint8),
        actions=actions,
        proprio=rng.standard_normal((t, 3)).astype(np.float32),
        states=rng.standard_normal((t, 2)) if states else None,
    )


@pytest.fixture
def episodes() -> list[Episode]:
    rng = np.random.default_rng(0)
    return [_episode(rng, t) for t in (5, 1, 7)]


@pytest.fixture
def written(tmp_path: Path, episodes: list[Episode]) -> Path:
    return write_dataset(tmp_path / "ds", episodes, META)


@pytest.mark.parametrize("mmap", [True, False])
def test_write_then_load_gives_identical_arrays(written, episodes, mmap):
    ds = load_dataset(written, mmap=mmap)
    assert ds.num_episodes == len(ds) == 3 and ds.num_frames == 13
    np.testing.assert_array_equal(ds.episode_starts, [0, 5, 6])
    np.testing.assert_array_equal(ds.episode_lengths, [5, 1, 7])
    for i, ep in enumerate(episodes):
        got = ds.episode(i)
        for name in ("frames", "actions", "proprio", "states"):
            want = getattr(ep, name)
            np.testing.assert_array_equal(getattr(got, name), want)
            assert getattr(got, name).dtype == want.dtype
    assert ds.meta["env"] == "toy" and ds.meta["seed"] == 0
    assert ds.meta["image_shape"] == [8, 6, 3] and ds.meta["state_dim"] == 2
    assert ds.meta["format_version"] == 1 and "created_at" in ds.meta


def test_memory_mapped_episodes_are_views(written):
    ds = load_dataset(written, mmap=True)
    assert np.shares_memory(ds.episode(2).frames, ds.frames)
    with pytest.raises(IndexError):
        ds.episode(3)


def test_states_are_optional(tmp_path):
    rng = np.random.default_rng(1)
    ds = load_dataset(write_dataset(tmp_path / "d", [_episode(rng, 4, states=False)], META))
    assert ds.states is None and ds.episode(0).states is None and ds.meta["state_dim"] is None


def test_interrupted_write_leaves_nothing_behind(tmp_path, episodes):
    def crashing():
        yield episodes[0]
        raise RuntimeError("simulator died")

    with pytest.raises(RuntimeError, match="simulator died"):
        write_dataset(tmp_path / "ds", crashing(), META)
    assert list(tmp_path.iterdir()) == []


def test_existing_dataset_is_kept_unless_overwrite(written, episodes):
    with pytest.raises(FileExistsError):
        write_dataset(written, episodes[:1], META)
    assert load_dataset(written).num_episodes == 3
    write_dataset(written, episodes[:1], META, overwrite=True)
    assert load_dataset(written).num_episodes == 1
    assert sorted(p.name for p in written.parent.iterdir()) == ["ds"]


def test_writer_refuses_bad_meta_and_mixed_episodes(tmp_path, episodes):
    with pytest.raises(DatasetError, match="env"):
        write_dataset(tmp_path / "a", episodes, {"seed": 0})
    with pytest.raises(DatasetError, match="num_frames"):
        write_dataset(tmp_path / "b", episodes, {**META, "num_frames": 3})
    no_states = _episode(np.random.default_rng(2), 3, states=False)
    with pytest.raises(DatasetError, match="states"):
        write_dataset(tmp_path / "c", [episodes[0], no_states], META)
    assert list(tmp_path.iterdir()) == []


def test_episode_validation_names_the_problem():
    rng = np.random.default_rng(3)
    ep = _episode(rng, 4)
    with pytest.raises(DatasetError, match="last action"):
        Episode(ep.frames, np.ones((4, 2), np.float32), ep.proprio)
    with pytest.raises(DatasetError, match="uint8"):
        Episode(ep.frames.astype(np.float32) / 255, ep.actions, ep.proprio)
    with pytest.raises(DatasetError, match=r"proprio must have shape \(4, dim\)"):
        Episode(ep.frames, ep.actions, ep.proprio[:3])


def _corrupt(path: Path, name: str, arr: np.ndarray) -> None:
    np.save(path / f"{name}.npy", arr)


def test_missing_file_is_named(written):
    (written / "proprio.npy").unlink()
    with pytest.raises(DatasetError, match="missing proprio.npy"):
        load_dataset(written)


def test_mismatched_lengths_are_named(written):
    _corrupt(written, "actions", np.zeros((12, 2), np.float32))
    with pytest.raises(DatasetError, match=r"actions.npy has 12 rows but frames.npy has 13"):
        load_dataset(written)


def test_wrong_dtype_is_named(written):
    _corrupt(written, "proprio", np.zeros((13, 3), np.float64))
    with pytest.raises(DatasetError, match=r"proprio.npy: dtype must be float32, got float64"):
        load_dataset(written)


def test_episode_out_of_range_is_named(written):
    _corrupt(written, "episode_lengths", np.array([5, 1, 9], np.int64))
    with pytest.raises(DatasetError, match=r"episode 2 spans frames \[6, 15\), outside the 13"):
        load_dataset(written)


def test_non_contiguous_episodes_are_named(written):
    _corrupt(written, "episode_starts", np.array([0, 4, 6], np.int64))
    with pytest.raises(DatasetError, match="episode 1 starts at frame 4, expected 5"):
        load_dataset(written)


def test_nonzero_final_action_is_named(written):
    actions = np.load(written / "actions.npy")
    actions[5] = 1.0  # episode 1 has a single frame, 5
    _corrupt(written, "actions", actions)
    with pytest.raises(DatasetError, match="last action of episode 1"):
        load_dataset(written)


def test_meta_disagreeing_with_arrays_is_named(written):
    meta = json.loads((written / "meta.json").read_text())
    meta["num_episodes"] = 4
    (written / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="num_episodes is 4 but the arrays say 3"):
        load_dataset(written)


def test_truncated_file_is_named(written):
    raw = (written / "frames.npy").read_bytes()
    (written / "frames.npy").write_bytes(raw[:-100])
    with pytest.raises(DatasetError, match="frames.npy"):
        load_dataset(written, mmap=False)
