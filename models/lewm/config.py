"""Architecture configuration of a LeWorldModel (Maes et al. 2026, `lucas-maes/le-wm`).

One frozen dataclass rebuilds the network, turns camera frames into its input
and its actions back into env units; saved in the artifact as a plain dict
(`models/artifact.py`, with `family: "lewm"`). Defaults are the published
model (le-wm `config/train/model/lewm.yaml` and `lewm.yaml`): a ViT-tiny of
patch 14 on 224 px frames whose CLS token is projected to a 192-d embedding,
a 6-layer AdaLN-zero predictor over a 3-frame history window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

FAMILY = "lewm"
# le-wm normalises frames with ImageNet statistics (stable-pretraining's `dataset_stats.ImageNet`).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LeWMConfig:
    """Args:
    name: identity reported by the server (`/health`, `/stats`).
    image_size: side of the square frames the ViT sees (le-wm `img_size`, 224);
        other sizes are resized by `LeWM.preprocess`.
    image_mean, image_std: per-channel normalisation after scaling to [0, 1].
    patch_size, vit_dim, vit_depth, vit_heads, vit_mlp_dim, vit_eps: the
        encoder, a Hugging Face `ViTModel` ("tiny": 192 wide, 12 layers, 3 heads,
        MLP 4x; LayerNorm eps 1e-12, that library's default).
    embed_dim: width of a frame's embedding after the projector (le-wm `embed_dim`).
    projector_hidden, pred_proj_hidden: hidden widths of the two BatchNorm MLPs.
    predictor_dim: the predictor's width (le-wm `hidden_dim`); when it differs
        from embed_dim, linear input/condition/output projections are used.
    num_hist: frames of history the predictor sees (le-wm `history_size`, 3);
        also the length of its learned position embedding.
    depth, heads, dim_head, mlp_dim: predictor transformer (6, 16, 64, 2048).
    action_smoothed_dim, action_mlp_scale: the action embedder, a kernel-1
        Conv1d to `action_smoothed_dim` then an MLP of width scale x embed_dim.
    raw_action_dim: action size of one env step, in env units.
    frameskip: env steps per model step (le-wm's `action_block`, 5); a model
        action is `frameskip` raw actions concatenated.
    action_low, action_high: optional raw action bounds (env units), applied by the planner.
    """

    name: str = "lewm"
    image_size: int = 224
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    patch_size: int = 14
    vit_dim: int = 192
    vit_depth: int = 12
    vit_heads: int = 3
    vit_mlp_dim: int = 768
    vit_eps: float = 1e-12
    embed_dim: int = 192
    projector_hidden: int = 2048
    pred_proj_hidden: int = 2048
    predictor_dim: int = 192
    num_hist: int = 3
    depth: int = 6
    heads: int = 16
    dim_head: int = 64
    mlp_dim: int = 2048
    action_smoothed_dim: int = 10
    action_mlp_scale: int = 4
    raw_action_dim: int = 2
    frameskip: int = 5
    action_low: tuple[float, ...] | None = None
    action_high: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "vit_dim", "vit_depth", "vit_heads", "vit_mlp_dim", "embed_dim",
                     "projector_hidden", "pred_proj_hidden", "predictor_dim", "num_hist", "depth", "heads",
                     "dim_head", "mlp_dim", "action_smoothed_dim", "action_mlp_scale", "raw_action_dim", "frameskip"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")
        if self.vit_dim % self.vit_heads:
            raise ValueError(f"vit_dim={self.vit_dim} is not divisible by vit_heads={self.vit_heads}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or any(s <= 0 for s in self.image_std):
            raise ValueError(f"image_mean/std need 3 values, std positive; got {self.image_mean}, {self.image_std}")
        if (self.action_low is None) != (self.action_high is None):
            raise ValueError("give both action_low and action_high, or neither")
        for bound in (self.action_low, self.action_high):
            if bound is not None and len(bound) != self.raw_action_dim:
                raise ValueError(f"action bounds {bound} need raw_action_dim={self.raw_action_dim} values")
        if self.action_low is not None and self.action_high is not None and any(
                lo >= hi for lo, hi in zip(self.action_low, self.action_high)):
            raise ValueError(f"action_low={self.action_low} must be below action_high={self.action_high}")

    # Derived sizes, in the names the planner and server read -------------------
    @property
    def family(self) -> str:
        return FAMILY

    @property
    def action_dim(self) -> int:
        """Size of one model-step action: `frameskip` raw actions concatenated."""
        return self.frameskip * self.raw_action_dim

    @property
    def proprio_dim(self) -> int:
        """LeWM plans from pixels alone."""
        return 0

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    # (De)serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LeWMConfig":
        """Rebuild from `to_dict()` output; unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LeWM config keys {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
