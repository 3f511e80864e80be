"""Build a model's latent subgoal graph from its training dataset, offline.

    python -m training.subgoals build --model models/default/wall.pt --dataset data/wall \
        [--out PATH] [--stride N] [--merge-quantile Q] [--max-merges K] [--max-episodes E]

Reads the dataset through `envs.dataset` (validated, memory-mapped), encodes
every `stride`-th frame of each episode with the model exactly as the server
encodes a request (frame and raw proprio), and hands the latents to
`planning.subgoals.build_graph`. The graph records the model's identity
(`models.artifact.model_identity`), so a server refuses a graph built with
another model. What the graph is and how it is searched: planning/subgoals.py
and docs/planning.md.

This lives beside the trainer rather than in planning/ because it reads a
dataset: planning/ imports nothing above models/, and the graph is, like a
model, an artifact made offline from data.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from envs.dataset import DatasetError, TrajectoryDataset, load_dataset
from models import Latent, WorldModel, load_model
from models.artifact import model_identity
from planning.subgoals import SubgoalBuildConfig, SubgoalGraph, build_graph, default_path

log = logging.getLogger(__name__)


def node_frames(ds: TrajectoryDataset, stride: int, max_episodes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices of the nodes (every `stride`-th frame of each episode, from its first) and their
    episode ids, both (N,) int64, over the first `max_episodes` episodes (None: all)."""
    episodes = ds.num_episodes if max_episodes is None else min(max_episodes, ds.num_episodes)
    starts, lengths = ds.episode_starts[:episodes].tolist(), ds.episode_lengths[:episodes].tolist()
    idx = [np.arange(s, s + n, stride) for s, n in zip(starts, lengths)]
    eps = [np.full(len(i), e) for e, i in enumerate(idx)]
    return np.concatenate(idx), np.concatenate(eps)


def build_from_dataset(model: WorldModel, model_path: str | Path, dataset: str | Path,
                       cfg: SubgoalBuildConfig, batch: int = 1024) -> SubgoalGraph:
    """Encode the dataset's node frames with `model` (frames and raw proprio, as the server
    encodes a request) and build the graph. DatasetError when `dataset` is not a dataset."""
    stride = cfg.stride or model.config.frameskip
    alpha = cfg.alpha if cfg.alpha is not None else float(model.planner_recommendation.get("alpha", 0.1))
    ds = load_dataset(dataset)
    idx, eps = node_frames(ds, stride, cfg.max_episodes)
    parts = []
    with torch.inference_mode():
        for i in range(0, len(idx), batch):
            sel = idx[i:i + batch]
            z = model.encode_observation(np.ascontiguousarray(ds.frames[sel]),
                                         np.ascontiguousarray(ds.proprio[sel]) if model.config.proprio_dim else None)
            parts.append(z.to("cpu"))
    z = Latent.cat(parts)
    log.info("encoded %d nodes from %d episodes of %s (stride %d)", len(idx), int(eps.max()) + 1, ds.path, stride)
    info = {"dataset": str(dataset), "stride": stride, "episodes": int(eps.max()) + 1,
            "merge_quantile": cfg.merge_quantile, "max_merges": cfg.max_merges}
    return build_graph(z, eps, cfg, alpha, model_identity(model_path), info)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.subgoals",
                                 description="Build a latent subgoal graph from a model's training dataset.")
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="encode the dataset and write the graph")
    b.add_argument("--model", required=True, help="model artifact (.pt)")
    b.add_argument("--dataset", required=True, help="dataset directory (envs/README.md format)")
    b.add_argument("--out", help="output file (default: next to the model, <model>.subgoals.pt)")
    b.add_argument("--stride", type=int, default=None, help="env steps between nodes (default: the frameskip)")
    b.add_argument("--merge-quantile", type=float, default=SubgoalBuildConfig.merge_quantile)
    b.add_argument("--max-merges", type=int, default=SubgoalBuildConfig.max_merges)
    b.add_argument("--max-episodes", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = SubgoalBuildConfig(stride=args.stride, merge_quantile=args.merge_quantile, max_merges=args.max_merges,
                             max_episodes=args.max_episodes)
    model = load_model(args.model, device="cpu")
    try:
        graph = build_from_dataset(model, args.model, args.dataset, cfg)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else default_path(args.model)
    graph.save(out)
    log.info("wrote %s: %s (%.1f MB)", out, json.dumps(graph.describe()), out.stat().st_size / 1e6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
