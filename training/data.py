"""Training data: an episode-level train/val split, train-split statistics,
and windows of `num_hist + 1` model steps for teacher forcing.

A model step spans `frameskip` env steps: the window starting at frame s uses
frames s, s+fs, ..., s+num_hist*fs, and model action k is the concatenation
of the raw actions at frames s+k*fs ... s+(k+1)*fs-1 (DINO-WM's grouping).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from envs.dataset import TrajectoryDataset
from models import NormStats


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # episode indices
    val: np.ndarray


def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> Split:
    """Shuffle episodes with `seed`, keep the first `val_fraction` for validation
    (at least one when there are two or more episodes)."""
    if num_episodes < 2:
        raise ValueError(f"need at least 2 episodes for a train/val split, got {num_episodes}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction}: must be in (0, 1)")
    order = np.random.default_rng(seed).permutation(num_episodes)
    n_val = min(num_episodes - 1, max(1, round(val_fraction * num_episodes)))
    return Split(train=np.sort(order[n_val:]), val=np.sort(order[:n_val]))


def _frame_rows(ds: TrajectoryDataset, episodes: np.ndarray, drop_last: bool) -> np.ndarray:
    """Global frame indices of `episodes`; drop_last skips each episode's final
    frame (its action row is padding, never executed)."""
    rows = [np.arange(ds.episode_starts[e], ds.episode_starts[e] + ds.episode_lengths[e] - int(drop_last))
            for e in episodes]
    return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)


def compute_stats(ds: TrajectoryDataset, split: Split, dataset_name: str) -> NormStats:
    """Action and proprio mean/std over the *training* episodes only."""
    act_rows = _frame_rows(ds, split.train, drop_last=True)
    all_rows = _frame_rows(ds, split.train, drop_last=False)
    actions = np.asarray(ds.actions[act_rows], dtype=np.float64)
    proprio = np.asarray(ds.proprio[all_rows], dtype=np.float64)
    return NormStats(
        action_mean=torch.tensor(actions.mean(0)), action_std=torch.tensor(actions.std(0)),
        proprio_mean=torch.tensor(proprio.mean(0)), proprio_std=torch.tensor(proprio.std(0)),
        provenance={"dataset": dataset_name, "split": "train", "num_episodes": int(len(split.train)),
                    "num_frames": int(len(all_rows)), "num_actions": int(len(act_rows)),
                    "val_episodes": int(len(split.val))})


def window_starts(ds: TrajectoryDataset, episodes: np.ndarray, num_hist: int, frameskip: int) -> np.ndarray:
    """Global start frames of every full window inside `episodes` (all offsets)."""
    span = num_hist * frameskip  # last frame of the window is start + span
    starts = [np.arange(ds.episode_starts[e], ds.episode_starts[e] + ds.episode_lengths[e] - span)
              for e in episodes if ds.episode_lengths[e] > span]
    return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)


def gather_windows(starts: np.ndarray, num_hist: int, frameskip: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame rows (W, num_hist+1) and raw action rows (W, num_hist, frameskip) of windows."""
    k = np.arange(num_hist + 1) * frameskip
    frames = starts[:, None] + k[None, :]
    actions = frames[:, :-1, None] + np.arange(frameskip)[None, None, :]
    return frames, actions
