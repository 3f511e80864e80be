"""Architecture configuration of the world model.

One frozen dataclass holds everything needed to rebuild the network, turn
camera frames into its input and its actions back into env units. It is saved
inside every model artifact as a plain dict (see `models/artifact.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

EncoderKind = Literal["conv", "dinov2_vits14"]
# How action/proprio embeddings join the visual tokens (DINO-WM's `concat_dim`):
#   "feature": tiled onto every patch token as extra channels (concat_dim=1);
#   "token":   appended as extra tokens of the visual width (concat_dim=0).
ConcatMode = Literal["feature", "token"]

ENCODER_KINDS = ("conv", "dinov2_vits14")
CONCAT_MODES = ("feature", "token")


@dataclass(frozen=True)
class WorldModelConfig:
    """Args:
    name: identity reported by the server (`/health`, `/stats`).
    image_size: side of the square frames the model sees; other sizes are
        resized with `WorldModel.preprocess`, the same transform training used.
    image_mean, image_std: per-channel normalisation after scaling to [0, 1];
        0.5/0.5 maps pixels to [-1, 1] like DINO-WM's `Normalize(0.5, 0.5)`.
    encoder: "conv" (small, trained by this project) or "dinov2_vits14"
        (DINOv2 ViT-S/14 architecture and parameter names).
    encoder_dim: width of the visual tokens (conv only; DINOv2 ViT-S is 384).
    conv_channels: channels of the stride-2 conv stages (conv only).
    token_grid: tokens per side after the conv encoder's pooling, so a frame
        becomes token_grid**2 tokens; few tokens keep CPU planning fast.
    vit_*: DINOv2 geometry. DINO-WM feeds 224 px frames and resizes them to
        vit_image_size=196 (14x14 patches) inside the model; the 37x37 position
        grid (518 px pretraining) is interpolated bicubically.
    raw_action_dim: action size of one env step, in env units.
    frameskip: env steps per model step; a model action is `frameskip` raw
        actions concatenated (DINO-WM's grouping).
    proprio_dim: proprioception size (0 = the model uses none).
    action_emb_dim, proprio_emb_dim: per-step linear embeddings (DINO-WM: 10).
    concat_mode: see ConcatMode.
    action_low, action_high: optional bounds of raw actions, in env units; the
        planner clamps samples to them.
    num_hist: frames of history the predictor sees (its causal window).
    depth, heads, dim_head, mlp_dim, dropout: predictor transformer.
    """

    name: str = "world-model"
    image_size: int = 64
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    encoder: EncoderKind = "conv"
    encoder_dim: int = 64
    conv_channels: tuple[int, ...] = (32, 64, 128)
    token_grid: int = 4
    vit_image_size: int = 196
    vit_patch_size: int = 14
    vit_dim: int = 384
    vit_depth: int = 12
    vit_heads: int = 6
    vit_pos_grid: int = 37
    raw_action_dim: int = 2
    frameskip: int = 5
    proprio_dim: int = 2
    action_emb_dim: int = 10
    proprio_emb_dim: int = 10
    concat_mode: ConcatMode = "feature"
    action_low: tuple[float, ...] | None = None
    action_high: tuple[float, ...] | None = None
    num_hist: int = 3
    depth: int = 4
    heads: int = 4
    dim_head: int = 32
    mlp_dim: int = 256
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.encoder not in ENCODER_KINDS:
            raise ValueError(f"encoder={self.encoder!r}: expected one of {ENCODER_KINDS}")
        if self.concat_mode not in CONCAT_MODES:
            raise ValueError(f"concat_mode={self.concat_mode!r}: expected one of {CONCAT_MODES}")
        for name in ("image_size", "raw_action_dim", "frameskip", "num_hist", "depth",
                     "heads", "dim_head", "mlp_dim", "token_grid", "encoder_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.proprio_dim < 0:
            raise ValueError(f"proprio_dim={self.proprio_dim}: must be >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout}: must be in [0, 1)")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("image_mean and image_std need 3 values (RGB)")
        if any(s <= 0 for s in self.image_std):
            raise ValueError(f"image_std={self.image_std}: must be positive")
        if self.encoder == "conv":
            if len(self.conv_channels) < 1:
                raise ValueError("conv_channels needs at least one stage")
            feat = self.image_size // 2 ** len(self.conv_channels)
            if feat < self.token_grid or feat % self.token_grid:
                raise ValueError(
                    f"token_grid={self.token_grid}: the conv feature map is {feat}x{feat} "
                    f"(image_size={self.image_size} / 2**{len(self.conv_channels)}); "
                    "token_grid must divide it")
        else:
            if self.vit_image_size % self.vit_patch_size:
                raise ValueError(f"vit_image_size={self.vit_image_size} is not a multiple of "
                                 f"vit_patch_size={self.vit_patch_size}")
            if self.vit_dim % self.vit_heads:
                raise ValueError(f"vit_dim={self.vit_dim} not divisible by vit_heads={self.vit_heads}")
        if self.concat_mode == "token":
            if self.action_emb_dim != self.visual_dim or (
                    self.proprio_dim and self.proprio_emb_dim != self.visual_dim):
                raise ValueError(
                    f"concat_mode='token' needs action_emb_dim and proprio_emb_dim equal to the "
                    f"visual width {self.visual_dim}; got {self.action_emb_dim}, {self.proprio_emb_dim}")
        for bound in (self.action_low, self.action_high):
            if bound is not None and len(bound) != self.raw_action_dim:
                raise ValueError(f"action bounds {bound} need raw_action_dim={self.raw_action_dim} values")
        if (self.action_low is None) != (self.action_high is None):
            raise ValueError("give both action_low and action_high, or neither")
        if self.action_low is not None and any(
                lo >= hi for lo, hi in zip(self.action_low, self.action_high)):  # type: ignore[arg-type]
            raise ValueError(f"action_low={self.action_low} must be below action_high={self.action_high}")

    # Derived sizes -----------------------------------------------------------
    @property
    def action_dim(self) -> int:
        """Size of one model-step action: `frameskip` raw actions concatenated."""
        return self.frameskip * self.raw_action_dim

    @property
    def visual_dim(self) -> int:
        return self.vit_dim if self.encoder == "dinov2_vits14" else self.encoder_dim

    @property
    def num_patches(self) -> int:
        if self.encoder == "dinov2_vits14":
            return (self.vit_image_size // self.vit_patch_size) ** 2
        return self.token_grid ** 2

    @property
    def proprio_width(self) -> int:
        """Width of the proprio embedding (0 when the model has no proprio)."""
        return self.proprio_emb_dim if self.proprio_dim > 0 else 0

    @property
    def tokens_per_frame(self) -> int:
        if self.concat_mode == "feature":
            return self.num_patches
        return self.num_patches + 1 + (1 if self.proprio_dim > 0 else 0)

    @property
    def token_dim(self) -> int:
        """Width of the predictor's tokens."""
        if self.concat_mode == "feature":
            return self.visual_dim + self.proprio_width + self.action_emb_dim
        return self.visual_dim

    # (De)serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WorldModelConfig":
        """Rebuild from `to_dict()` output; unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown world-model config keys {unknown}; known: {sorted(known)}")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fixed)
