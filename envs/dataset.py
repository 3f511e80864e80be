"""Trajectory datasets on disk: a directory of ``.npy`` arrays plus ``meta.json``.

The format is deliberately plain so any simulator can write it (see
``envs/README.md``). With N frames in E episodes stored back to back:

    frames.npy           (N, H, W, 3) uint8   RGB
    actions.npy          (N, A) float32       actions[i] is applied at frame i and
                                              leads to frame i + 1; the last frame of
                                              each episode has an all-zero row, unused
    proprio.npy          (N, P) float32
    episode_starts.npy   (E,) int64           first frame of each episode
    episode_lengths.npy  (E,) int64           frames per episode (>= 1)
    states.npy           (N, S) float64       optional: simulator state, for evaluation
    meta.json            format_version, env, image_shape, action_dim, proprio_dim,
                         state_dim, num_frames, num_episodes, created_at, plus any
                         generator settings the writer adds (seed, policy, ...)

Episodes are contiguous and in order: ``episode_starts[0] == 0`` and
``episode_starts[e + 1] == episode_starts[e] + episode_lengths[e]``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from envs._npy import NpyAppender

FORMAT_VERSION = 1
REQUIRED_FILES = (
    "frames.npy",
    "actions.npy",
    "proprio.npy",
    "episode_starts.npy",
    "episode_lengths.npy",
    "meta.json",
)
# Keys of meta.json that the writer derives from the arrays; a caller may not set them.
COMPUTED_META_KEYS = frozenset(
    {
        "format_version",
        "image_shape",
        "action_dim",
        "proprio_dim",
        "state_dim",
        "num_frames",
        "num_episodes",
        "created_at",
    }
)
# name -> (dtype, ndim) of every array file; states is the only optional one.
_ARRAY_SPEC: dict[str, tuple[np.dtype, int]] = {
    "frames": (np.dtype(np.uint8), 4),
    "actions": (np.dtype(np.float32), 2),
    "proprio": (np.dtype(np.float32), 2),
    "episode_starts": (np.dtype(np.int64), 1),
    "episode_lengths": (np.dtype(np.int64), 1),
    "states": (np.dtype(np.float64), 2),
}


class DatasetError(ValueError):
    """A dataset directory or episode that does not follow the format."""


@dataclass
class Episode:
    """One trajectory of T frames.

    Args:
        frames: (T, H, W, 3) uint8 RGB.
        actions: (T, A) float32; ``actions[t]`` is applied at ``frames[t]``;
            ``actions[-1]`` must be all zero (no frame follows it).
        proprio: (T, P) float32.
        states: optional (T, S) float64 simulator state.

    Float inputs are converted to the stored dtypes (no copy when they already
    match); frames must already be uint8, because a float image's range
    ([0, 1] or [0, 255]) cannot be guessed.
    """

    frames: np.ndarray
    actions: np.ndarray
    proprio: np.ndarray
    states: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.actions = np.asarray(self.actions, dtype=np.float32)
        self.proprio = np.asarray(self.proprio, dtype=np.float32)
        if self.states is not None:
            self.states = np.asarray(self.states, dtype=np.float64)
        f = self.frames
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8:
            raise DatasetError(
                f"frames must be a uint8 array, got {getattr(f, 'dtype', type(f))}; "
                "convert float images in [0, 1] with (x * 255).round().astype(np.uint8)"
            )
        if f.ndim != 4 or f.shape[-1] != 3 or f.shape[0] < 1:
            raise DatasetError(f"frames must have shape (T>=1, H, W, 3), got {f.shape}")
        t = f.shape[0]
        named = [("actions", self.actions), ("proprio", self.proprio)]
        if self.states is not None:
            named.append(("states", self.states))
        for name, arr in named:
            if arr.ndim != 2 or arr.shape[0] != t:
                raise DatasetError(
                    f"{name} must have shape ({t}, dim) to match frames, got {arr.shape}"
                )
            if not np.all(np.isfinite(arr)):
                raise DatasetError(f"{name} contains NaN or Inf")
        if np.any(self.actions[-1] != 0):
            raise DatasetError(
                f"the last action row must be all zero (no frame follows it), got "
                f"{self.actions[-1].tolist()}; actions[t] is the action applied at frames[t]"
            )

    @property
    def length(self) -> int:
        """Number of frames T."""
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class TrajectoryDataset:
    """A loaded dataset: the arrays (memory-mapped or in memory) and meta."""

    path: Path
    meta: dict[str, Any]
    frames: np.ndarray  # (N, H, W, 3) uint8
    actions: np.ndarray  # (N, A) float32
    proprio: np.ndarray  # (N, P) float32
    episode_starts: np.ndarray  # (E,) int64
    episode_lengths: np.ndarray  # (E,) int64
    states: np.ndarray | None = field(default=None)  # (N, S) float64

    @property
    def num_episodes(self) -> int:
        return int(self.episode_starts.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def __len__(self) -> int:
        return self.num_episodes

    def episode(self, i: int) -> Episode:
        """Episode ``i`` as views into the arrays (no copy when memory-mapped)."""
        if not 0 <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range [0, {self.num_episodes})")
        s = int(self.episode_starts[i])
        e = s + int(self.episode_lengths[i])
        return Episode(
            frames=self.frames[s:e],
            actions=self.actions[s:e],
            proprio=self.proprio[s:e],
            states=None if self.states is None else self.states[s:e],
        )


def write_dataset(
    path: str | Path,
    episodes: Iterable[Episode],
    meta: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Stream ``episodes`` to a new dataset directory at ``path``; return its path.

    The dataset is built in a hidden temporary sibling directory and renamed
    into place only when complete, so an exception (or a crash) part-way
    leaves nothing at ``path``. ``meta`` must name the ``env``; keys in
    ``COMPUTED_META_KEYS`` are derived from the arrays and may not be given.
    """
    path = Path(path)
    if "env" not in meta:
        raise DatasetError("meta must name the environment, e.g. {'env': 'wall'}")
    clash = sorted(COMPUTED_META_KEYS & set(meta))
    if clash:
        raise DatasetError(f"meta keys {clash} are computed by write_dataset; remove them")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    # A hidden sibling on the same filesystem, so the final rename is atomic;
    # mkdir (unlike mkdtemp's 0700) gives the dataset the usual permissions.
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    writers: dict[str, NpyAppender] = {}
    done = False
    try:
        lengths = _stream_episodes(tmp, episodes, writers)
        for w in writers.values():
            w.close()
        lengths_arr = np.asarray(lengths, dtype=np.int64)
        starts_arr = np.concatenate([[0], np.cumsum(lengths_arr)[:-1]]).astype(np.int64)
        _save_synced(tmp / "episode_starts.npy", starts_arr)
        _save_synced(tmp / "episode_lengths.npy", lengths_arr)
        full_meta = {
            "format_version": FORMAT_VERSION,
            **meta,
            "image_shape": list(writers["frames"].row_shape),
            "action_dim": writers["actions"].row_shape[0],
            "proprio_dim": writers["proprio"].row_shape[0],
            "state_dim": writers["states"].row_shape[0] if "states" in writers else None,
            "num_frames": writers["frames"].rows,
            "num_episodes": len(lengths),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        with open(tmp / "meta.json", "w") as f:
            json.dump(full_meta, f, indent=2, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        _move_into_place(tmp, path, overwrite)
        done = True
    finally:
        if not done:
            for w in writers.values():
                w.abort()
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_dataset(path: str | Path, mmap: bool = True) -> TrajectoryDataset:
    """Open and validate a dataset directory; arrays are memory-mapped unless ``mmap=False``.

    Raises ``DatasetError`` naming the file and the problem: a missing file,
    a wrong dtype or rank, inconsistent lengths, episodes out of range or not
    contiguous, a non-zero final action, or meta that disagrees with the
    arrays.
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: not a dataset directory")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise DatasetError(f"{path}: missing {', '.join(missing)}")
    try:
        meta = json.loads((path / "meta.json").read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path / 'meta.json'}: not valid JSON ({e})") from e
    if meta.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path / 'meta.json'}: format_version {meta.get('format_version')!r} is not "
            f"supported (this reader knows {FORMAT_VERSION})"
        )
    arrays = {
        name: _load_array(path, name, mmap)
        for name in _ARRAY_SPEC
        if name != "states" or (path / "states.npy").is_file()
    }
    _validate_arrays(path, arrays)
    _validate_meta(path, meta, arrays)
    return TrajectoryDataset(path=path, meta=meta, **arrays)


# --- internals ---------------------------------------------------------------


def _stream_episodes(
    tmp: Path, episodes: Iterable[Episode], writers: dict[str, NpyAppender]
) -> list[int]:
    """Append every episode's arrays to ``writers`` (created from the first episode)."""
    lengths: list[int] = []
    for i, ep in enumerate(episodes):
        parts = {"frames": ep.frames, "actions": ep.actions, "proprio": ep.proprio}
        if ep.states is not None:
            parts["states"] = ep.states
        if not writers:
            for name, arr in parts.items():
                dtype = _ARRAY_SPEC[name][0]
                writers[name] = NpyAppender(tmp / f"{name}.npy", dtype, arr.shape[1:])
        if set(parts) != set(writers):
            raise DatasetError(
                f"episode {i} has arrays {sorted(parts)} but episode 0 had {sorted(writers)}; "
                "states must be given for all episodes or none"
            )
        for name, arr in parts.items():
            if arr.shape[1:] != writers[name].row_shape:
                raise DatasetError(
                    f"episode {i}: {name} rows have shape {arr.shape[1:]}, "
                    f"but episode 0 had {writers[name].row_shape}"
                )
            writers[name].append(arr)
        lengths.append(ep.length)
    if not lengths:
        raise DatasetError("no episodes to write")
    return lengths


def _move_into_place(tmp: Path, path: Path, overwrite: bool) -> None:
    # A directory rename is atomic on POSIX; replacing an existing dataset
    # needs two renames, with the old one parked beside it meanwhile.
    if overwrite and path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old)
    else:
        os.rename(tmp, path)


def _save_synced(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr)
        f.flush()
        os.fsync(f.fileno())


def _json_default(obj: Any) -> Any:
    # Generator settings often hold numpy scalars or small arrays.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"meta value of type {type(obj).__name__} is not JSON serialisable")


def _load_array(path: Path, name: str, mmap: bool) -> np.ndarray:
    file = path / f"{name}.npy"
    try:
        arr = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{file}: unreadable or truncated ({e})") from e
    dtype, ndim = _ARRAY_SPEC[name]
    if arr.dtype != dtype:
        raise DatasetError(f"{file}: dtype must be {dtype}, got {arr.dtype}")
    if arr.ndim != ndim:
        raise DatasetError(f"{file}: must be {ndim}-D, got shape {arr.shape}")
    return arr


def _validate_arrays(path: Path, a: dict[str, np.ndarray]) -> None:
    frames = a["frames"]
    if frames.shape[-1] != 3:
        raise DatasetError(f"{path}/frames.npy: must be (N, H, W, 3) RGB, got {frames.shape}")
    n = frames.shape[0]
    for name in ("actions", "proprio", "states"):
        if name in a and a[name].shape[0] != n:
            raise DatasetError(
                f"{path}/{name}.npy has {a[name].shape[0]} rows but frames.npy has {n} frames"
            )
    starts, lengths = np.asarray(a["episode_starts"]), np.asarray(a["episode_lengths"])
    if starts.shape != lengths.shape:
        raise DatasetError(
            f"{path}: episode_starts has {starts.shape[0]} entries, "
            f"episode_lengths has {lengths.shape[0]}"
        )
    if starts.shape[0] == 0:
        raise DatasetError(f"{path}: no episodes")
    if np.any(lengths < 1):
        i = int(np.flatnonzero(lengths < 1)[0])
        raise DatasetError(f"{path}: episode {i} has length {lengths[i]} (must be >= 1)")
    ends = starts + lengths
    bad = np.flatnonzero((starts < 0) | (ends > n))
    if bad.size:
        i = int(bad[0])
        raise DatasetError(
            f"{path}: episode {i} spans frames [{starts[i]}, {ends[i]}), "
            f"outside the {n} frames in frames.npy"
        )
    expected = np.concatenate([[0], ends[:-1]])
    bad = np.flatnonzero(starts != expected)
    if bad.size:
        i = int(bad[0])
        raise DatasetError(
            f"{path}: episode {i} starts at frame {starts[i]}, expected {expected[i]}; "
            "episodes must be stored back to back in order"
        )
    if ends[-1] != n:
        raise DatasetError(f"{path}: episodes cover {ends[-1]} frames but frames.npy has {n}")
    for name in ("actions", "proprio"):
        if not np.all(np.isfinite(a[name])):
            raise DatasetError(f"{path}/{name}.npy contains NaN or Inf")
    last = np.asarray(a["actions"][ends - 1])  # (E, A)
    bad = np.flatnonzero(np.any(last != 0, axis=1))
    if bad.size:
        i = int(bad[0])
        raise DatasetError(
            f"{path}: the last action of episode {i} (frame {ends[i] - 1}) is "
            f"{last[i].tolist()}, must be all zero; actions[i] is the action applied at frame i"
        )


def _validate_meta(path: Path, meta: dict[str, Any], a: dict[str, np.ndarray]) -> None:
    actual = {
        "num_frames": a["frames"].shape[0],
        "num_episodes": a["episode_starts"].shape[0],
        "image_shape": list(a["frames"].shape[1:]),
        "action_dim": a["actions"].shape[1],
        "proprio_dim": a["proprio"].shape[1],
        "state_dim": a["states"].shape[1] if "states" in a else None,
    }
    for key, value in actual.items():
        if meta.get(key) != value:
            raise DatasetError(
                f"{path / 'meta.json'}: {key} is {meta.get(key)!r} but the arrays say {value!r}"
            )
