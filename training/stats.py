"""python -m training.stats DATASET --out stats.json [--val-fraction 0.1] [--seed 0]

Action/proprio mean and std of a dataset's *training split*, as a JSON file
that `python -m models.import_dino_wm --stats` reads. The split rule is the
trainer's (`training.data.split_episodes`): episodes shuffled with `--seed`,
the first `round(val_fraction * E)` held out for validation, statistics over
the rest. Use the same rule and seed the model was trained with.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from envs.dataset import DatasetError, load_dataset
from training.data import compute_stats, split_episodes


def stats_json(dataset: str | Path, val_fraction: float, seed: int) -> dict:
    ds = load_dataset(dataset)
    split = split_episodes(ds.num_episodes, val_fraction, seed)
    stats = compute_stats(ds, split, dataset_name=str(dataset))
    out = {k: v.tolist() for k, v in stats.to_dict().items() if k != "provenance"}
    out["provenance"] = {**stats.provenance, "split_rule": f"training.data.split_episodes(val_fraction={val_fraction}, "
                                                           f"seed={seed}): shuffled episodes, first share is val"}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.stats", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--out", required=True)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        data = stats_json(args.dataset, args.val_fraction, args.seed)
    except (DatasetError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    Path(args.out).write_text(json.dumps(data, indent=1))
    print(f"wrote {args.out}: train-split statistics over {data['provenance']['num_episodes']} episodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
