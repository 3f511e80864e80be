"""Collect random-action trajectories from ``WallEnv`` into a dataset directory.

    python -m envs.collect --out data/wall --episodes 1000 --steps 100 --seed 0

The behaviour policy mixes two kinds of segments, each 5-20 env steps long:
*persistent* segments hold one uniformly drawn action (so the agent travels
far, slides along the wall and crosses through the door) and *independent*
segments draw a fresh uniform action every step (local, jittery motion that
covers the action space). ``--persistent-prob`` is the chance that a segment
is persistent. Start states are uniform over the free space of the whole
room, both sides of the wall.

An episode of ``--steps T`` env steps has T + 1 frames. The dataset stores
every env step; a world model with frameskip k subsamples it itself.
Episode ``e`` uses its own generator spawned from ``--seed``, so the output
is identical for a given seed whatever the machine.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from envs.dataset import Episode, write_dataset
from envs.wall import DEFAULT_FRAMESKIP, WallEnv, WallLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectConfig:
    """Behaviour policy and sizes for one collection run.

    Args:
        episodes: number of episodes.
        steps: env steps per episode (frames per episode = steps + 1).
        seed: root seed; episode ``e`` draws from ``SeedSequence(seed).spawn``'s e-th child.
        persistent_prob: probability that a segment holds one action.
        hold_min: shortest segment, in env steps.
        hold_max: longest segment, in env steps (inclusive).
    """

    episodes: int
    steps: int
    seed: int = 0
    persistent_prob: float = 0.7
    hold_min: int = 5
    hold_max: int = 20

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.persistent_prob <= 1.0:
            raise ValueError(f"persistent_prob must be in [0, 1], got {self.persistent_prob}")
        if not 1 <= self.hold_min <= self.hold_max:
            raise ValueError(
                f"need 1 <= hold_min <= hold_max, got hold_min={self.hold_min}, "
                f"hold_max={self.hold_max}"
            )


def sample_actions(cfg: CollectConfig, max_step: float, rng: np.random.Generator) -> np.ndarray:
    """Draw one episode's (steps, 2) float64 actions from the mixed behaviour policy."""
    actions = np.empty((cfg.steps, 2), dtype=np.float64)
    t = 0
    while t < cfg.steps:
        hold = min(int(rng.integers(cfg.hold_min, cfg.hold_max + 1)), cfg.steps - t)
        if rng.random() < cfg.persistent_prob:
            actions[t : t + hold] = rng.uniform(-max_step, max_step, size=2)
        else:
            actions[t : t + hold] = rng.uniform(-max_step, max_step, size=(hold, 2))
        t += hold
    return actions


def rollout_episode(env: WallEnv, cfg: CollectConfig, rng: np.random.Generator) -> Episode:
    """One episode from a uniform free start state: (steps + 1) frames."""
    actions = sample_actions(cfg, env.layout.max_step, rng)
    t1 = cfg.steps + 1
    frames = np.empty((t1, *env.image_shape), dtype=np.uint8)
    proprio = np.empty((t1, env.proprio_dim), dtype=np.float32)
    states = np.empty((t1, env.state_dim), dtype=np.float64)
    stored = np.zeros((t1, env.action_dim), dtype=np.float32)  # last row stays zero
    obs = env.reset(state=env.sample_free_state(rng))
    for t in range(t1):
        frames[t], proprio[t], states[t] = obs["visual"], obs["proprio"], env.get_state()
        if t < cfg.steps:
            obs, info = env.step(actions[t])
            stored[t] = info["action"]  # the clipped action the env applied
    return Episode(frames=frames, actions=stored, proprio=proprio, states=states)


def crosses_wall(env: WallEnv, states: np.ndarray) -> bool:
    """True when any of the (T, 2) ``states`` lies on the other side from the first."""
    left = states[:, 0] < env.layout.wall_center_x
    return bool(np.any(left != left[0]))


def collect(
    out: str | Path,
    cfg: CollectConfig,
    layout: WallLayout | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Collect ``cfg.episodes`` episodes into a dataset at ``out``; return a summary.

    The summary holds ``episodes``, ``frames``, ``cross_fraction`` (the share
    of episodes whose agent changes side at least once) and ``path``.
    """
    env = WallEnv(layout)
    seeds = np.random.SeedSequence(cfg.seed).spawn(cfg.episodes)
    crossed = 0

    def episodes():
        nonlocal crossed
        for ss in tqdm(seeds, desc="collect wall", unit="ep", disable=not progress):
            ep = rollout_episode(env, cfg, np.random.default_rng(ss))
            crossed += crosses_wall(env, ep.states)
            yield ep

    meta = {
        "env": "wall",
        "env_layout": asdict(env.layout),
        "frameskip_hint": DEFAULT_FRAMESKIP,
        "seed": cfg.seed,
        "generator": {"policy": "mixed uniform/persistent segments", **asdict(cfg)},
    }
    path = write_dataset(out, episodes(), meta, overwrite=overwrite)
    summary = {
        "path": str(path),
        "episodes": cfg.episodes,
        "frames": cfg.episodes * (cfg.steps + 1),
        "cross_fraction": crossed / cfg.episodes,
    }
    log.info("collected %s", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m envs.collect", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="dataset directory to create")
    p.add_argument("--episodes", type=int, required=True)
    p.add_argument("--steps", type=int, required=True, help="env steps per episode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--persistent-prob", type=float, default=0.7)
    p.add_argument("--hold-min", type=int, default=5)
    p.add_argument("--hold-max", type=int, default=20)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    args = p.parse_args(argv)
    cfg = CollectConfig(
        episodes=args.episodes,
        steps=args.steps,
        seed=args.seed,
        persistent_prob=args.persistent_prob,
        hold_min=args.hold_min,
        hold_max=args.hold_max,
    )
    s = collect(args.out, cfg, overwrite=args.overwrite)
    print(
        f"wrote {s['episodes']} episodes, {s['frames']} frames to {s['path']}; "
        f"{s['cross_fraction']:.1%} of episodes cross the wall"
    )


if __name__ == "__main__":
    main()
