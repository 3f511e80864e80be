"""Collect random-action trajectories from gym-pusht into a dataset directory.

    python -m envs.collect_pusht --out data/pusht --episodes 600 --steps 50 --seed 0

Needs the optional extra: ``pip install -e .[pusht]``. The format is
``envs/dataset.py``'s (frames, relative actions in table pixels, proprio =
agent position, states = ``envs.pusht.PushTEnv.get_state()``).

Random actions rarely touch the block, and a world model cannot learn to
push from data where nothing is pushed. So the agent starts within
``--near`` px of the block, and segments of 3-10 env steps are of three
kinds: *toward* the block (a held action aimed at the block's centre, with
noise: contacts, pushes and rotations), *persistent* (one uniform action
held) and *independent* (a fresh uniform action every step). Episode ``e``
uses its own generator spawned from ``--seed``: the output is the same for a
given seed.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from envs.dataset import Episode, write_dataset
from envs.pusht import DEFAULT_FRAMESKIP, DEFAULT_IMAGE_SIZE, DEFAULT_MAX_STEP, PushTEnv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushTCollectConfig:
    """Args:
        episodes: number of episodes.
        steps: env steps per episode (frames = steps + 1).
        seed: root seed.
        image_size: rendered frame side in pixels.
        max_step: per-axis bound of a relative action (table px).
        near: the agent starts within this many px of the block (per axis).
        toward_prob: chance that a segment pushes toward the block.
        persistent_prob: chance that a segment holds one uniform action (else independent).
        hold_min / hold_max: segment length in env steps (inclusive).
    """

    episodes: int
    steps: int
    seed: int = 0
    image_size: int = DEFAULT_IMAGE_SIZE
    max_step: float = DEFAULT_MAX_STEP
    near: float = 120.0
    toward_prob: float = 0.5
    persistent_prob: float = 0.3
    hold_min: int = 3
    hold_max: int = 10

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.steps < 1:
            raise ValueError(f"episodes and steps must be >= 1, got {self.episodes}, {self.steps}")
        if not (0 <= self.toward_prob <= 1 and 0 <= self.persistent_prob <= 1):
            raise ValueError(f"probabilities must be in [0, 1], got {self.toward_prob}, {self.persistent_prob}")
        if not 1 <= self.hold_min <= self.hold_max:
            raise ValueError(f"need 1 <= hold_min <= hold_max, got {self.hold_min}, {self.hold_max}")


def segment_actions(env: PushTEnv, cfg: PushTCollectConfig, hold: int, rng: np.random.Generator) -> np.ndarray:
    """(hold, 2) actions of one segment, drawn from the current state."""
    m = cfg.max_step
    u = rng.random()
    if u < cfg.toward_prob:
        s = env.get_state()
        direction = s[2:4] - s[0:2] + rng.normal(0, 30, size=2)
        a = direction / max(np.abs(direction).max(), 1e-6) * m * rng.uniform(0.3, 1.0)
        return np.repeat(a[None], hold, axis=0)
    if u < cfg.toward_prob + (1 - cfg.toward_prob) * cfg.persistent_prob:
        return np.repeat(rng.uniform(-m, m, size=(1, 2)), hold, axis=0)
    return rng.uniform(-m, m, size=(hold, 2))


def rollout_episode(env: PushTEnv, cfg: PushTCollectConfig, rng: np.random.Generator,
                    start: np.ndarray | None = None) -> Episode:
    """One episode of ``cfg.steps`` env steps ((steps + 1) frames) from ``start`` or a sampled state."""
    t1 = cfg.steps + 1
    frames = np.empty((t1, *env.image_shape), dtype=np.uint8)
    proprio = np.empty((t1, env.proprio_dim), dtype=np.float32)
    states = np.empty((t1, env.state_dim), dtype=np.float64)
    stored = np.zeros((t1, env.action_dim), dtype=np.float32)  # last row stays zero
    obs = env.reset(env.sample_state(rng, cfg.near) if start is None else start)
    pending = np.empty((0, 2))
    for t in range(t1):
        frames[t], proprio[t], states[t] = obs["visual"], obs["proprio"], env.get_state()
        if t == cfg.steps:
            break
        if len(pending) == 0:
            hold = int(rng.integers(cfg.hold_min, cfg.hold_max + 1))
            pending = segment_actions(env, cfg, hold, rng)
        obs, info = env.step(pending[0])
        pending = pending[1:]
        stored[t] = info["action"]  # the clipped action applied
    return Episode(frames=frames, actions=stored, proprio=proprio, states=states)


def collect(out: str | Path, cfg: PushTCollectConfig, progress: bool = True, overwrite: bool = False) -> dict:
    """Write ``cfg.episodes`` episodes to ``out``; return a summary (with the share of
    episodes in which the block moved by more than 5 px or 0.1 rad)."""
    env = PushTEnv(cfg.image_size, cfg.max_step)
    seeds = np.random.SeedSequence(cfg.seed).spawn(cfg.episodes)
    pushed = 0

    def episodes():
        nonlocal pushed
        for ss in tqdm(seeds, desc="collect pusht", unit="ep", disable=not progress):
            ep = rollout_episode(env, cfg, np.random.default_rng(ss))
            s = ep.states
            moved = np.linalg.norm(s[:, 2:4] - s[0, 2:4], axis=1).max()
            turned = np.abs(np.unwrap(s[:, 4]) - s[0, 4]).max()
            pushed += bool(moved > 5 or turned > 0.1)
            yield ep

    meta = {"env": "pusht", "frameskip_hint": DEFAULT_FRAMESKIP, "seed": cfg.seed,
            "action": "relative target offset of the agent, table px",
            "state": "agent x, y, block x, y, block angle, agent vx, vy",
            "generator": {"policy": "toward-block / persistent / independent segments", **asdict(cfg)}}
    path = write_dataset(out, episodes(), meta, overwrite=overwrite)
    summary = {"path": str(path), "episodes": cfg.episodes, "frames": cfg.episodes * (cfg.steps + 1),
               "pushed_fraction": pushed / cfg.episodes}
    log.info("collected %s", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m envs.collect_pusht", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--episodes", type=int, required=True)
    p.add_argument("--steps", type=int, required=True, help="env steps per episode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    p.add_argument("--max-step", type=float, default=DEFAULT_MAX_STEP)
    p.add_argument("--near", type=float, default=120.0)
    p.add_argument("--toward-prob", type=float, default=0.5)
    p.add_argument("--persistent-prob", type=float, default=0.3)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    cfg = PushTCollectConfig(episodes=args.episodes, steps=args.steps, seed=args.seed, image_size=args.image_size,
                             max_step=args.max_step, near=args.near, toward_prob=args.toward_prob,
                             persistent_prob=args.persistent_prob)
    s = collect(args.out, cfg, overwrite=args.overwrite)
    print(f"wrote {s['episodes']} episodes, {s['frames']} frames to {s['path']}; "
          f"the block moved in {s['pushed_fraction']:.1%} of them")


if __name__ == "__main__":
    main()
