"""Action/proprio statistics as a JSON file that `python -m models.dino_wm --stats` reads.

    python -m training.stats DATASET --out stats.json [--val-fraction 0.1] [--seed 0]
    python -m training.stats DINO_WM_DATA_DIR --rule dino-wm --env wall|point_maze --out stats.json [--n-rollout N]
    python -m training.stats --rule dino-wm --env pusht --out stats.json [--no-velocity]

Rule "train" (default), for a dataset in this project's format: statistics of
the *training split* by the trainer's rule (`training.data.split_episodes`):
episodes shuffled with `--seed`, the first `round(val_fraction * E)` held out
for validation, statistics over the rest. Use the rule and seed the model was
trained with.

Rule "dino-wm": the statistics DINO-WM's own dataset loaders normalise with,
reproduced exactly (github.com/gaoyuezhou/dino_wm, `datasets/*_dset.py`):

* wall (`WallDataset`): `states.pth` and `actions.pth` of the data folder,
  the first `n_rollout` rollouts (all when unset), actions divided by the
  loader's `action_scale` (1); mean and (unbiased) std over every time step
  of every loaded rollout, *before* the train/val split. Proprio = states.
* point_maze (`PointMazeDataset`): the same, over each rollout's first
  `seq_lengths[i]` steps (`seq_lengths.pth`), in float32.
* pusht (`PushTDataset`): no data is read; the class normalises with
  constants published in its source (`models.dino_wm.published`).

The data folder is the one the run's `hydra.yaml` names (`env.dataset.data_path`;
for wall's `split_mode: folder`, its `train` subfolder). Tensors are read
with `torch.load(weights_only=True)`. Action statistics come out in the units
DINO-WM's env takes (dataset actions / action_scale); `--action-scale S`
multiplies the action mean and std by S for a client that sends actions in
other units (this project's PushT client sends pixels: S = 100).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from envs.dataset import DatasetError, load_dataset
from models.dino_wm.published import (DINO_WM_COMMIT, DINO_WM_REPO, LOADER_ACTION_SCALE, PUSHT_ACTION_MEAN,
                                      PUSHT_ACTION_STD, PUSHT_PROPRIO_MEAN, PUSHT_PROPRIO_STD, PUSHT_SOURCE)
from models.stats import NormStats
from training.data import compute_stats, split_episodes

DINO_WM_ENVS = ("wall", "point_maze", "pusht")


def stats_json(dataset: str | Path, val_fraction: float, seed: int) -> dict:
    """Train-split statistics of a dataset in this project's format, as JSON-able data."""
    ds = load_dataset(dataset)
    split = split_episodes(ds.num_episodes, val_fraction, seed)
    stats = compute_stats(ds, split, dataset_name=str(dataset))
    stats.provenance["split_rule"] = (f"training.data.split_episodes(val_fraction={val_fraction}, seed={seed}): "
                                      "shuffled episodes, first share is val")
    return to_json(stats)


def to_json(stats: NormStats) -> dict[str, Any]:
    out: dict[str, Any] = {k: v.tolist() for k, v in stats.to_dict().items() if k != "provenance"}
    out["provenance"] = dict(stats.provenance)
    return out


# DINO-WM's loaders -------------------------------------------------------------------
def _load_tensor(path: Path) -> torch.Tensor:
    if not path.is_file():
        raise ValueError(f"{path} not found: is {path.parent} a DINO-WM data folder (states.pth, actions.pth)?")
    t = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{path} holds a {type(t).__name__}, not a tensor")
    return t


def dino_wm_stats(env: str, data_dir: str | Path | None = None, n_rollout: int | None = None,
                  with_velocity: bool = True, action_scale: float = 1.0) -> NormStats:
    """The action/proprio statistics DINO-WM's `env` loader normalises with (see module doc).

    action_scale: multiplies the action mean and std (units conversion for
    the client; 1 = DINO-WM's env units).
    """
    if env not in DINO_WM_ENVS:
        raise ValueError(f"env={env!r}: DINO-WM's loaders with normalisation statistics are {DINO_WM_ENVS}")
    if not action_scale > 0:
        raise ValueError(f"action_scale={action_scale}: must be > 0")
    units = {"action_scale": action_scale,
             "action_units": "DINO-WM env actions (dataset actions / loader action_scale "
                             f"{LOADER_ACTION_SCALE[env]:g})" + (f" x {action_scale:g}" if action_scale != 1 else "")}
    if env == "pusht":
        proprio = slice(None) if with_velocity else slice(0, 2)
        return NormStats(
            torch.tensor(PUSHT_ACTION_MEAN) * action_scale, torch.tensor(PUSHT_ACTION_STD) * action_scale,
            torch.tensor(PUSHT_PROPRIO_MEAN[proprio]), torch.tensor(PUSHT_PROPRIO_STD[proprio]),
            provenance={"dataset": str(data_dir) if data_dir else "pusht_noise (DINO-WM)", "split": "published",
                        "source": PUSHT_SOURCE, "with_velocity": with_velocity, **units})
    if data_dir is None:
        raise ValueError(f"the DINO-WM {env} loader computes its statistics from the data: give its data folder")
    data_dir = Path(data_dir)
    states = _load_tensor(data_dir / "states.pth")
    actions = _load_tensor(data_dir / "actions.pth")
    if n_rollout is not None and n_rollout < 1:
        raise ValueError(f"n_rollout={n_rollout}: must be >= 1 (or unset for all)")
    n = n_rollout or len(states)  # the loaders' `if self.n_rollout: n = n_rollout else len(states)`
    if env == "wall":
        actions = actions[:n] / LOADER_ACTION_SCALE[env]
        proprios = states[:n].clone()
        a_mean, a_std = actions.mean(dim=(0, 1)), actions.std(dim=(0, 1))
        p_mean, p_std = proprios.mean(dim=(0, 1)), proprios.std(dim=(0, 1))
        frames = int(actions.shape[0] * actions.shape[1])
    else:  # point_maze
        states, actions = states.float(), actions.float() / LOADER_ACTION_SCALE[env]
        lengths = _load_tensor(data_dir / "seq_lengths.pth")[:n]
        states, actions = states[:n], actions[:n]
        a_all = torch.vstack([actions[i, :int(lengths[i])] for i in range(len(lengths))])
        p_all = torch.vstack([states[i, :int(lengths[i])] for i in range(len(lengths))])
        a_mean, a_std = torch.mean(a_all, dim=0), torch.std(a_all, dim=0)
        p_mean, p_std = torch.mean(p_all, dim=0), torch.std(p_all, dim=0)
        frames = int(a_all.shape[0])
    rule = (f"{DINO_WM_REPO}@{DINO_WM_COMMIT[:7]} datasets/{env}_dset.py: mean and unbiased std over every step of "
            f"the {n} loaded rollouts (n_rollout={n_rollout}), before get_train_val_sliced")
    return NormStats(a_mean * action_scale, a_std * action_scale, p_mean, p_std,
                     provenance={"dataset": str(data_dir), "split": "all_loaded", "rule": rule,
                                 "num_episodes": int(n), "num_frames": frames, **units})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.stats", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?", help="dataset folder (this project's format, or DINO-WM's data folder)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rule", choices=("train", "dino-wm"), default="train")
    ap.add_argument("--val-fraction", type=float, default=0.1, help="rule train")
    ap.add_argument("--seed", type=int, default=0, help="rule train")
    ap.add_argument("--env", choices=DINO_WM_ENVS, help="rule dino-wm: which DINO-WM loader")
    ap.add_argument("--n-rollout", type=int, help="rule dino-wm: the run's env.dataset.n_rollout (unset: all)")
    ap.add_argument("--no-velocity", action="store_true", help="rule dino-wm, pusht: with_velocity=false runs")
    ap.add_argument("--action-scale", type=float, default=1.0, help="rule dino-wm: multiply action mean/std by it")
    args = ap.parse_args(argv)
    try:
        if args.rule == "train":
            if args.dataset is None:
                raise ValueError("rule train needs a DATASET")
            data = stats_json(args.dataset, args.val_fraction, args.seed)
        else:
            if args.env is None:
                raise ValueError("rule dino-wm needs --env (wall, point_maze or pusht)")
            data = to_json(dino_wm_stats(args.env, args.dataset, args.n_rollout, not args.no_velocity,
                                         args.action_scale))
    except (DatasetError, ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    Path(args.out).write_text(json.dumps(data, indent=1))
    prov = data["provenance"]
    print(f"wrote {args.out}: {prov['split']} statistics" +
          (f" over {prov['num_episodes']} episodes" if "num_episodes" in prov else f" from {prov.get('source')}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
