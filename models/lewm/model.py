"""LeWorldModel behind the planner's world-model interface.

A frame becomes one 192-d embedding (the ViT's CLS token through the
projector), held as `Latent(visual=(N, 1, E), proprio=(N, 0))`, so the
planner, its objectives and the server treat it like any other model with
no patch grid in the hot path. A rollout predicts frame t + 1 from the last
`num_hist` frames and their actions (le-wm's `JEPA.rollout` with one observed
frame), each prediction passing through `pred_proj`.

`LeWM` offers what the planner and the server use of `models.WorldModel`:
`preprocess`, `encode`, `encode_observation`, `rollout`,
`differentiable_rollout`, `rollout_bytes_per_sample`, `rollout_gflop`,
`codec`, `config`, `describe`, `planner_recommendation`,
`configure_inference`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.inference import InferenceConfig, check_supported, guarded_rollout, precision
from models.lewm.config import LeWMConfig
from models.lewm.flops import rollout_flops
from models.lewm.network import ActionEmbedder, BatchNormMLP, KVCache, Predictor, ViTEncoder
from models.stats import ActionCodec, NormStats
from models.world_model import Latent

log = logging.getLogger(__name__)


class LeWM(nn.Module):
    def __init__(self, config: LeWMConfig, stats: NormStats) -> None:
        super().__init__()
        self.config = config
        self.stats = stats
        if stats.action_mean.numel() != config.raw_action_dim:
            raise ValueError(f"statistics have {stats.action_mean.numel()} action dims, config "
                             f"raw_action_dim={config.raw_action_dim}")
        if stats.proprio_mean.numel():
            raise ValueError(f"statistics carry {stats.proprio_mean.numel()} proprio dims; LeWM plans from pixels "
                             "alone, so give empty proprio statistics")
        self.codec = ActionCodec(stats, config.frameskip)
        c = config
        self.encoder = ViTEncoder(c)
        self.projector = BatchNormMLP(c.vit_dim, c.projector_hidden, c.embed_dim)
        self.action_encoder = ActionEmbedder(c)
        self.predictor = Predictor(c)
        self.pred_proj = BatchNormMLP(c.embed_dim, c.pred_proj_hidden, c.embed_dim)
        self.register_buffer("image_mean", torch.tensor(c.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(c.image_std).view(1, 3, 1, 1), persistent=False)
        self.inference = InferenceConfig()
        self._compiled_rollout: Callable[[Latent, torch.Tensor], Latent] | None = None
        self.metadata: dict[str, Any] = {}  # the artifact's facts; "planner" is the recommendation

    # Identity ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.image_mean.device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def planner_recommendation(self) -> dict[str, Any]:
        """The artifact's metadata "planner" (LeWM's paper planner for an import), validated by
        `planning.PlannerConfig.for_model`."""
        recommended = self.metadata.get("planner") or {}
        if not isinstance(recommended, dict):
            raise ValueError(f"model metadata 'planner' must be a mapping of planner settings, not {recommended!r}")
        return dict(recommended)

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"name": c.name, "family": c.family, "parameters": self.num_parameters(), "encoder": "vit_cls",
                "image_size": c.image_size, "frameskip": c.frameskip, "raw_action_dim": c.raw_action_dim,
                "action_dim": c.action_dim, "proprio_dim": 0, "num_hist": c.num_hist, "latent": [1, c.embed_dim],
                "action_low": c.action_low, "action_high": c.action_high,
                "stats_provenance": dict(self.stats.provenance),
                "inference": {**self.inference.describe(), "compiled": self._compiled_rollout is not None}}

    # Inference options -------------------------------------------------------
    def configure_inference(self, inference: InferenceConfig | None = None, **options: object) -> "LeWM":
        """Precision and compilation of `encode` and `rollout` (models/inference.py); returns self."""
        cfg = inference if inference is not None else InferenceConfig(**options)  # type: ignore[arg-type]
        check_supported(cfg, self.device)
        self.to(cfg.torch_dtype if cfg.reduced and cfg.strategy == "cast" else torch.float32)
        self.inference, self._compiled_rollout = cfg, None
        if cfg.compile:
            try:
                compiled = torch.compile(self._rollout, backend=cfg.compile_backend, mode=cfg.compile_mode)
                for h in cfg.compile_horizons:
                    z0 = Latent(torch.zeros(2, 1, self.config.embed_dim, device=self.device),
                                torch.zeros(2, 0, device=self.device))
                    with torch.inference_mode(), precision(cfg, self.device):
                        compiled(*self._cast_inputs(z0, torch.zeros(2, h, self.config.action_dim, device=self.device)))
                self._compiled_rollout = compiled
            except Exception as exc:  # noqa: BLE001 - any compiler failure means "run eagerly"
                log.warning("torch.compile of the LeWM rollout failed (%s: %s); running eagerly",
                            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        log.info("inference: %s on %s", cfg.describe(), self.device)
        return self

    def _cast_inputs(self, z: Latent, actions: torch.Tensor) -> tuple[Latent, torch.Tensor]:
        dtype = self.predictor.pos_embedding.dtype
        return Latent(z.visual.to(dtype), z.proprio.to(dtype)), actions.to(dtype)

    # Observations -> latents ----------------------------------------------------
    def preprocess(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """le-wm's eval transform: (N, H, W, 3) RGB, uint8 or float in [0, 1] -> (N, 3, S, S),
        scaled to [0, 1], resized (bilinear, antialiased) and ImageNet-normalised. le-wm
        normalises before resizing; both are per-channel linear maps, so the order does not matter."""
        frames = torch.as_tensor(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (N, H, W, 3); got {tuple(frames.shape)}")
        x = frames.to(self.device)
        x = (x.float() / 255.0 if x.dtype == torch.uint8 else x.float()).permute(0, 3, 1, 2)  # (N, 3, H, W)
        s = self.config.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.image_mean) / self.image_std

    def encode(self, pixels: torch.Tensor, proprio: torch.Tensor | None = None) -> Latent:
        """pixels: (N, 3, S, S) normalised -> Latent (N, 1, E), (N, 0), fp32. proprio is ignored
        (LeWM has none; the argument keeps the planner's interface)."""
        with precision(self.inference, self.device):
            emb = self.projector(self.encoder(pixels.to(self.predictor.pos_embedding.dtype))).float()  # (N, E)
        return Latent(emb.unsqueeze(1), emb.new_zeros(emb.shape[0], 0))

    def encode_observation(self, frames: torch.Tensor | np.ndarray, proprio: Any = None) -> Latent:
        """Raw frames (see `preprocess`) -> Latent."""
        return self.encode(self.preprocess(self.to_device(torch.as_tensor(frames))))

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        """Host tensors go to a CUDA model through pinned memory, asynchronously."""
        if self.device.type != "cuda" or t.device.type != "cpu":
            return t.to(self.device)
        return t.pin_memory().to(self.device, non_blocking=True)

    # Dynamics ------------------------------------------------------------------
    def predict(self, emb: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Teacher-forced next-frame embeddings (le-wm's `JEPA.predict`): emb (B, T, E) of
        frames 0..T-1, actions (B, T, action_dim) normalised, T <= num_hist -> (B, T, E),
        the predictions of frames 1..T."""
        out = self.predictor(emb, self.action_encoder(actions))  # (B, T, E)
        return self.pred_proj(out.reshape(-1, out.shape[-1])).view(out.shape)

    def rollout(self, z0: Latent, actions: torch.Tensor) -> Latent:
        """Open-loop rollout from one observed frame (planning; inference only).

        z0: Latent (B, 1, E), (B, 0); actions: (B, H, action_dim) normalised.
        Returns Latent (B, H, 1, E), (B, H, 0): predicted frames 1..H, fp32.
        """
        return guarded_rollout(self, z0, actions)

    def differentiable_rollout(self, z0: Latent, actions: torch.Tensor) -> Latent:
        """`rollout` for gradient solvers: `_rollout` is out of place, so autograd follows it."""
        return self._rollout(z0, actions)

    def _rollout(self, z0: Latent, actions: torch.Tensor) -> Latent:
        """While the window still starts at frame 0 (t < num_hist) frame t sits at slot t and
        earlier frames' keys and values are cached, so only the newest frame is computed
        (exact under causal attention). Once the window slides, every frame moves to
        another slot and position, so the window is recomputed, with only the last
        frame's outputs in the last block."""
        b, h, _ = actions.shape
        nh = self.config.num_hist
        a_emb = self.action_encoder(actions)  # (B, H, E)
        frames = [z0.visual[:, 0]]  # each (B, E)
        cache = KVCache(len(self.predictor.blocks))
        for t in range(h):
            if t < nh:
                out = self.predictor(frames[t][:, None], a_emb[:, t:t + 1], cache=cache, start=t)  # (B, 1, E)
            else:
                lo = t + 1 - nh
                window = torch.stack(frames[lo:], dim=1)  # (B, nh, E)
                out = self.predictor(window, a_emb[:, lo:t + 1], last_only=True)  # (B, 1, E)
            frames.append(self.pred_proj(out[:, 0]))
        visual = torch.stack(frames[1:], dim=1).unsqueeze(2)  # (B, H, 1, E)
        return Latent(visual, visual.new_zeros(b, h, 0))

    # Cost ----------------------------------------------------------------------
    def rollout_gflop(self, horizon: int) -> float:
        """GFLOPs of one sample's rollout as `rollout` runs it (models/lewm/flops.py)."""
        return rollout_flops(self.config, horizon).total / 1e9

    def rollout_bytes_per_sample(self, horizon: int) -> int:
        """Rough peak activation memory of `rollout` per sample: the frames, the key/value
        cache, and one block's temporaries over the window (qkv, attention, MLP, AdaLN),
        plus pred_proj's hidden layer."""
        c = self.config
        inner, d = c.heads * c.dim_head, c.predictor_dim
        block = c.num_hist * (3 * inner + inner + c.mlp_dim + 8 * d) + c.heads * c.num_hist ** 2
        cache = c.depth * c.num_hist * 2 * inner
        elems = (2 * horizon + 2) * c.embed_dim + cache + 2 * block + c.pred_proj_hidden
        return self.inference.element_bytes * elems + 4 * horizon * c.embed_dim
