"""What the benchmarks plan on: model configs, random-weight models, problems, frames.

Problems are *reachable*: the goal latent is the model's own rollout of a
known action sequence from the observation, so a perfect planner reaches
loss 0 and the final objective measures plan quality on any weights,
random ones included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import Latent, NormStats, WorldModel, WorldModelConfig
from models import testing

ROOT = Path(__file__).resolve().parents[1]  # the checkout (configs/, models/)


# Models ------------------------------------------------------------------------
def default_arch() -> WorldModelConfig:
    """The architecture of the shipped default model (configs/wall.json)."""
    return WorldModelConfig.from_dict(json.loads((ROOT / "configs" / "wall.json").read_text())["model"])


def dino_wm_config(patch_side: int = 14) -> WorldModelConfig:
    """DINO-WM's proportions: DINOv2 ViT-S/14 patch tokens (width 384) with 10-wide
    proprio and action embeddings tiled on (token width 404), predictor depth 6,
    16 heads of 64, MLP 2048, 3 frames of history. patch_side=14 is the paper's
    196 patches (224 px frames resized to 196 px); smaller sides scale the
    number of patches down, every per-token width unchanged."""
    side_px = 14 * patch_side
    return WorldModelConfig(
        name=f"dino-wm-proportioned-{patch_side * patch_side}p", encoder="dinov2_vits14",
        image_size=224 if patch_side == 14 else side_px, vit_image_size=side_px,
        raw_action_dim=2, frameskip=5, proprio_dim=4, action_emb_dim=10, proprio_emb_dim=10,
        concat_mode="feature", num_hist=3, depth=6, heads=16, dim_head=64, mlp_dim=2048)


# --quick: the same code paths on a DINO-WM-shaped model small enough for a test (not a measurement).
QUICK_DINO = {"vit_depth": 1, "depth": 2, "heads": 4, "dim_head": 16, "mlp_dim": 128}


def synthetic_stats(cfg: WorldModelConfig) -> NormStats:
    return NormStats(action_mean=torch.zeros(cfg.raw_action_dim), action_std=torch.ones(cfg.raw_action_dim),
                     proprio_mean=torch.zeros(cfg.proprio_dim), proprio_std=torch.ones(cfg.proprio_dim),
                     provenance={"dataset": "synthetic", "split": "train", "num_episodes": 0, "num_frames": 0})


def random_model(cfg: WorldModelConfig, seed: int = 0, **overrides: Any) -> WorldModel:
    """An eval-mode model with random weights (timing does not depend on the weights)."""
    cfg = replace(cfg, **overrides)
    return testing.random_model(cfg, synthetic_stats(cfg), seed)


# Problems ----------------------------------------------------------------------
def smooth_frames(n: int, size: int, seed: int) -> np.ndarray:
    """(n, size, size, 3) uint8 frames of low-frequency colour noise: image-like
    content (PNG compresses it as it would a camera frame, unlike white noise)."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (n, 3, 8, 8)).astype(np.float32))
    img = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return img.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


@dataclass
class Problem:
    """B planning problems: observation frames and proprio (raw), their model
    input (pixels normalised, proprio normalised), the observation latent and
    a goal latent reached by `true_actions`."""

    frames: torch.Tensor  # (B, S, S, 3) uint8
    proprio: torch.Tensor | None  # (B, proprio_dim) env units
    pixels: torch.Tensor  # (B, 3, S, S) normalised
    norm_proprio: torch.Tensor | None  # (B, proprio_dim) normalised
    z_obs: Latent
    z_goal: Latent
    true_actions: torch.Tensor  # (B, H, action_dim) normalised

    @property
    def batch(self) -> int:
        return self.frames.shape[0]


def reachable_problem(model: WorldModel, batch: int, horizon: int, seed: int) -> Problem:
    c = model.config
    g = torch.Generator().manual_seed(seed)
    frames = torch.from_numpy(smooth_frames(batch, c.image_size, seed))
    proprio = torch.randn(batch, c.proprio_dim, generator=g) if c.proprio_dim else None
    with torch.inference_mode():
        pixels = model.preprocess(frames)
        norm_proprio = model.codec.normalize_proprio(proprio) if proprio is not None else None
        z_obs = model.encode(pixels, norm_proprio)
        true_actions = torch.randn(batch, horizon, c.action_dim, generator=g)
        if c.action_low is not None:
            lo, hi = model.codec.model_bounds(c.action_low, c.action_high)
            true_actions = true_actions.clamp(lo, hi)
        reached = model.rollout(z_obs, true_actions)
    z_goal = Latent(reached.visual[:, -1].clone(), reached.proprio[:, -1].clone())
    return Problem(frames, proprio, pixels, norm_proprio, z_obs, z_goal, true_actions)


def wall_problem(model: WorldModel, batch: int, seed: int) -> Problem:
    """B problems from the wall environment, for a model trained on it: DINO-WM's
    "near" goals (5 model steps of random actions from the start)."""
    from envs.tasks import wall_tasks as make_tasks
    from envs import WallEnv

    env = WallEnv()
    tasks = make_tasks("near", batch, seed, env, model.config.frameskip)
    frames = torch.from_numpy(np.stack([env.render(s) for s, _ in tasks]))
    goals = torch.from_numpy(np.stack([env.render(g) for _, g in tasks]))
    proprio = torch.tensor(np.stack([s for s, _ in tasks]), dtype=torch.float32)
    goal_proprio = torch.tensor(np.stack([g for _, g in tasks]), dtype=torch.float32)
    with torch.inference_mode():
        pixels = model.preprocess(frames)
        norm_proprio = model.codec.normalize_proprio(proprio)
        z_obs = model.encode(pixels, norm_proprio)
        z_goal = model.encode_observation(goals, goal_proprio)
    empty = torch.empty(batch, 0, model.config.action_dim)
    return Problem(frames, proprio, pixels, norm_proprio, z_obs, z_goal, empty)
