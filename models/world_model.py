"""The DINO-WM-style world model: encoder, action/proprio embeddings, predictor.

Read bottom-up: `Latent` (what a frame becomes), then `WorldModel` with
`preprocess` (pixels -> model input), `encode` (-> Latent), `predict`
(teacher-forced, for training) and `rollout` (open-loop, for planning).

A frame's latent is its visual patch tokens plus a proprio embedding; the
predictor sees them joined with the embedding of the action taken at that
frame, either as extra feature channels on every patch ("feature", DINO-WM's
concat_dim=1) or as extra tokens ("token"). Action and proprio embeddings are
per-step linear maps (DINO-WM's Conv1d with kernel 1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.config import WorldModelConfig
from models.encoders import build_encoder
from models.inference import InferenceConfig, check_supported, guarded_rollout, precision
from models.predictor import KVCache, Predictor
from models.stats import ActionCodec, NormStats

log = logging.getLogger(__name__)


class Latent(NamedTuple):
    """visual: (..., P, Dv) patch tokens; proprio: (..., Ep) proprio embedding."""

    visual: torch.Tensor
    proprio: torch.Tensor

    def index(self, idx: torch.Tensor | slice | int) -> "Latent":
        """Select along the leading (batch) axis."""
        return Latent(self.visual[idx], self.proprio[idx])

    @staticmethod
    def cat(latents: list["Latent"]) -> "Latent":
        return Latent(torch.cat([z.visual for z in latents]), torch.cat([z.proprio for z in latents]))

    def to(self, device: torch.device | str) -> "Latent":
        return Latent(self.visual.to(device), self.proprio.to(device))


class WorldModel(nn.Module):
    def __init__(self, config: WorldModelConfig, stats: NormStats) -> None:
        super().__init__()
        self.config = config
        self.stats = stats
        self.codec = ActionCodec(stats, config.frameskip)
        if stats.action_mean.numel() != config.raw_action_dim:
            raise ValueError(f"statistics have {stats.action_mean.numel()} action dims, config "
                             f"raw_action_dim={config.raw_action_dim}")
        if stats.proprio_mean.numel() != config.proprio_dim:
            raise ValueError(f"statistics have {stats.proprio_mean.numel()} proprio dims, config "
                             f"proprio_dim={config.proprio_dim}")
        self.encoder = build_encoder(config)
        self.action_encoder = nn.Linear(config.action_dim, config.action_emb_dim)
        self.proprio_encoder = nn.Linear(config.proprio_dim, config.proprio_width) if config.proprio_dim else None
        self.predictor = Predictor(config.token_dim, config.tokens_per_frame, config.num_hist, config.depth,
                                   config.heads, config.dim_head, config.mlp_dim, config.dropout)
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)
        self.inference = InferenceConfig()
        self._compiled_rollout: Callable[[Latent, torch.Tensor], Latent] | None = None
        # The artifact's free-form facts (training run, provenance of its planner settings);
        # `load_model` fills it. Its "planner" entry is the trainer's recommendation.
        self.metadata: dict[str, Any] = {}

    @property
    def planner_recommendation(self) -> dict[str, Any]:
        """Planner settings the model's trainer (or its importer) recommends: the artifact's
        metadata "planner" (e.g. objective "all", alpha 10; a solver `method`). Validated by
        `planning.PlannerConfig.for_model`, which puts them over the device preset."""
        recommended = self.metadata.get("planner") or {}
        if not isinstance(recommended, dict):
            raise ValueError(f"model metadata 'planner' must be a mapping of planner settings, not {recommended!r}")
        return dict(recommended)

    # Inference options -------------------------------------------------------
    def configure_inference(self, inference: InferenceConfig | None = None, **options: object) -> "WorldModel":
        """Set precision and compilation for `encode` and `rollout` (see models/inference.py).

        `configure_inference(InferenceConfig(dtype="bf16"))` or
        `configure_inference(dtype="bf16", compile=True)`. Call after moving the
        model to its device. Raises ValueError when the device cannot compute
        in the dtype; a failed compilation only logs a warning (eager fallback).
        Returns self.
        """
        cfg = inference if inference is not None else InferenceConfig(**options)  # type: ignore[arg-type]
        check_supported(cfg, self.device)
        float_dtype = cfg.torch_dtype if cfg.reduced and cfg.strategy == "cast" else torch.float32
        self.to(float_dtype)  # weights: fp32 unless the cast strategy asks otherwise
        self.inference, self._compiled_rollout = cfg, None
        if cfg.compile:
            self._compiled_rollout = self._compile_rollout()
        log.info("inference: %s on %s", cfg.describe(), self.device)
        return self

    def _compile_rollout(self) -> Callable[[Latent, torch.Tensor], Latent] | None:
        """torch.compile the rollout and compile it now, on warm-up rollouts of
        each `compile_horizons` horizon; None (eager) with a warning when
        compilation fails.

        The batch axis is marked dynamic on a batch of 2, and a batch of 1 is
        compiled too (torch specialises sizes 0 and 1): the planner's chunks of
        any size and its one-sample final scoring then reuse these graphs
        instead of recompiling mid-plan."""
        c = self.config
        try:
            compiled = torch.compile(self._rollout, backend=self.inference.compile_backend,
                                     mode=self.inference.compile_mode)
            for h in self.inference.compile_horizons:
                for b in (2, 1):
                    z0 = Latent(torch.zeros(b, c.num_patches, c.visual_dim, device=self.device),
                                torch.zeros(b, c.proprio_width, device=self.device))
                    actions = torch.zeros(b, h, c.action_dim, device=self.device)
                    z0, actions = self._cast_inputs(z0, actions)
                    if b > 1:
                        for t in (z0.visual, z0.proprio, actions):
                            torch._dynamo.mark_dynamic(t, 0)
                    with torch.inference_mode(), precision(self.inference, self.device):
                        compiled(z0, actions)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means "run eagerly"
            log.warning("torch.compile of the rollout failed on %s (%s: %s); running eagerly",
                        self.device, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return None
        return compiled

    def _cast_inputs(self, z: Latent, actions: torch.Tensor) -> tuple[Latent, torch.Tensor]:
        """Inputs in the weights' dtype (only the cast strategy changes it)."""
        dtype = self.action_encoder.weight.dtype
        return Latent(z.visual.to(dtype), z.proprio.to(dtype)), actions.to(dtype)

    # Identity ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.image_mean.device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def describe(self) -> dict:
        c = self.config
        return {"name": c.name, "parameters": self.num_parameters(), "encoder": c.encoder,
                "image_size": c.image_size, "frameskip": c.frameskip, "raw_action_dim": c.raw_action_dim,
                "action_dim": c.action_dim, "proprio_dim": c.proprio_dim, "num_hist": c.num_hist,
                "tokens_per_frame": c.tokens_per_frame, "token_dim": c.token_dim,
                "action_low": c.action_low, "action_high": c.action_high,
                "stats_provenance": dict(self.stats.provenance), "inference": {**self.inference.describe(), "compiled": self._compiled_rollout is not None}}

    # Observations -> latents ----------------------------------------------------
    def preprocess(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The training transform. frames: (N, H, W, 3) RGB, uint8 in [0, 255]
        or float in [0, 1] (a tensor or a numpy array), any H and W -> (N, 3, S, S)
        normalised, S = image_size."""
        frames = torch.as_tensor(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (N, H, W, 3); got {tuple(frames.shape)}")
        x = frames.to(self.device)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        x = x.permute(0, 3, 1, 2)  # (N, 3, H, W)
        s = self.config.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.image_mean) / self.image_std

    def encode(self, pixels: torch.Tensor, proprio: torch.Tensor | None) -> Latent:
        """pixels: (N, 3, S, S) normalised; proprio: (N, proprio_dim) normalised
        (None when proprio_dim == 0) -> Latent (N, P, Dv), (N, Ep), fp32 whatever
        the inference dtype."""
        if self.inference.reduced:
            with precision(self.inference, self.device):
                dtype = self.action_encoder.weight.dtype
                z = self._encode(pixels.to(dtype), None if proprio is None else proprio.to(dtype))
            return Latent(z.visual.float(), z.proprio.float())
        return self._encode(pixels, proprio)

    def _encode(self, pixels: torch.Tensor, proprio: torch.Tensor | None) -> Latent:
        visual = self.encoder(pixels)
        if self.proprio_encoder is None:
            emb = visual.new_zeros(visual.shape[0], 0)
        else:
            if proprio is None:
                raise ValueError(f"this model needs proprio of size {self.config.proprio_dim}")
            emb = self.proprio_encoder(proprio.to(visual))
        return Latent(visual, emb)

    def encode_observation(self, frames: torch.Tensor | np.ndarray,
                           proprio: torch.Tensor | np.ndarray | None) -> Latent:
        """Raw frames (see `preprocess`) and raw proprio (N, proprio_dim) in env units
        (tensors or numpy arrays) -> Latent."""
        norm_proprio = None
        if self.config.proprio_dim:
            if proprio is None:
                raise ValueError(f"this model needs proprio of size {self.config.proprio_dim}")
            norm_proprio = self.codec.normalize_proprio(self.to_device(torch.as_tensor(proprio)).float())
        return self.encode(self.preprocess(self.to_device(torch.as_tensor(frames))), norm_proprio)

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        """Host tensors go to a CUDA model through pinned memory, asynchronously:
        the copy overlaps host work, and the kernels that read it are queued
        behind it on the same stream, so no sync is needed. Frames travel as
        uint8 (4x fewer bytes than float) and are converted on the device."""
        if self.device.type != "cuda" or t.device.type != "cpu":
            return t.to(self.device)
        return t.pin_memory().to(self.device, non_blocking=True)

    # Tokens --------------------------------------------------------------------
    def tokens(self, z: Latent, action_emb: torch.Tensor) -> torch.Tensor:
        """Join a latent with an action embedding: (..., P, Dv), (..., Ep), (..., Ea)
        -> (..., tokens_per_frame, token_dim)."""
        vis = z.visual
        if self.config.concat_mode == "feature":
            p = vis.shape[-2]
            tiled = [e.unsqueeze(-2).expand(*e.shape[:-1], p, e.shape[-1]) for e in (z.proprio, action_emb)]
            return torch.cat([vis, *tiled], dim=-1)
        extra = [z.proprio.unsqueeze(-2)] if self.proprio_encoder is not None else []
        return torch.cat([vis, *extra, action_emb.unsqueeze(-2)], dim=-2)

    def split(self, tokens: torch.Tensor) -> Latent:
        """Inverse of `tokens` for predictions: (..., tokens_per_frame, token_dim) -> Latent.
        In feature mode the proprio part is read from the first patch, as DINO-WM does."""
        c = self.config
        if c.concat_mode == "feature":
            return Latent(tokens[..., :c.visual_dim], tokens[..., 0, c.visual_dim:c.visual_dim + c.proprio_width])
        p = c.num_patches
        proprio = tokens[..., p, :] if self.proprio_encoder is not None else tokens[..., p, :0]
        return Latent(tokens[..., :p, :], proprio)

    def _set_action(self, frame_tokens: torch.Tensor, action_emb: torch.Tensor) -> None:
        """Overwrite the action part of (B, tokens_per_frame, token_dim) in place."""
        if self.config.concat_mode == "feature":
            frame_tokens[..., -action_emb.shape[-1]:] = action_emb.unsqueeze(-2)
        else:
            frame_tokens[..., -1, :] = action_emb

    # Dynamics ------------------------------------------------------------------
    def predict(self, z: Latent, actions: torch.Tensor) -> Latent:
        """Teacher-forced one-step prediction over a window (training).

        z: Latent (B, T, P, Dv), (B, T, Ep) of frames 0..T-1, T <= num_hist;
        actions: (B, T, action_dim) normalised, action t taken at frame t.
        Returns Latent (B, T, ...): the predicted frames 1..T.
        """
        b, t = actions.shape[:2]
        x = self.tokens(z, self.action_encoder(actions))  # (B, T, p, D)
        out = self.predictor(x.reshape(b, t * x.shape[2], x.shape[3]))  # (B, T*p, D)
        return self.split(out.view(b, t, x.shape[2], x.shape[3]))

    def rollout(self, z0: Latent, actions: torch.Tensor) -> Latent:
        """Open-loop rollout from one observed frame (planning; inference only).

        z0: Latent (B, P, Dv), (B, Ep); actions: (B, H, action_dim) normalised.
        Returns Latent (B, H, P, Dv), (B, H, Ep): predicted frames 1..H, in
        fp32 whatever the inference dtype (`configure_inference`); compiled
        when configured so (`_rollout` is the computation).
        """
        return guarded_rollout(self, z0, actions)

    def _rollout(self, z0: Latent, actions: torch.Tensor) -> Latent:
        """The rollout itself (see `rollout` for shapes).

        Frames live in one preallocated buffer (no growing concatenation);
        predicted frames are written in place with their next action. While
        the window still starts at frame 0 (the first num_hist steps), earlier
        frames' keys and values are cached and only the newest frame is
        computed (exact under the frame-causal mask, `Predictor.extend`).
        Once the window slides, every frame sits at another learned absolute
        position, so the window is recomputed, with only the last frame's
        outputs in the last block (`last_only`).
        """
        b, h, _ = actions.shape
        c = self.config
        a_emb = self.action_encoder(actions)  # (B, H, Ea)
        p, d = c.tokens_per_frame, c.token_dim
        frames = torch.empty(b, h, p, d, device=actions.device, dtype=a_emb.dtype)  # frame t + action t
        frames[:, 0] = self.tokens(z0, a_emb[:, 0])
        visual = torch.empty(b, h, c.num_patches, c.visual_dim, device=actions.device, dtype=a_emb.dtype)
        proprio = torch.empty(b, h, c.proprio_width, device=actions.device, dtype=a_emb.dtype)
        cache = KVCache(self.predictor, b, min(h, c.num_hist), actions.device, a_emb.dtype)
        for t in range(h):
            if t < c.num_hist:  # the window is frames 0..t at positions 0..t: extend it
                nxt = self.predictor.extend(frames[:, t], cache)  # (B, p, D): frame t+1
            else:
                lo = t + 1 - c.num_hist
                window = frames[:, lo:t + 1].reshape(b, c.num_hist * p, d)  # (B, n*p, D)
                nxt = self.predictor(window, last_only=True)  # (B, p, D): frame t+1
            z = self.split(nxt)
            visual[:, t], proprio[:, t] = z.visual, z.proprio
            if t + 1 < h:
                frames[:, t + 1] = nxt
                self._set_action(frames[:, t + 1], a_emb[:, t + 1])
        return Latent(visual, proprio)

    def rollout_bytes_per_sample(self, horizon: int) -> int:
        """Rough peak activation memory of `rollout` per sample, in bytes, at the
        inference dtype's element size: the frame buffer, the key/value cache,
        plus one predictor block's temporaries over the widest window, with the
        attention matrix materialised (worst case), plus the fp32 outputs."""
        c = self.config
        n = min(horizon, c.num_hist) * c.tokens_per_frame
        inner = c.heads * c.dim_head
        block = n * (3 * c.token_dim + 4 * inner + c.mlp_dim) + c.heads * n * n
        cache = c.depth * n * 2 * inner
        outputs = 4 * horizon * (c.num_patches * c.visual_dim + c.proprio_width)
        return self.inference.element_bytes * (horizon * c.tokens_per_frame * c.token_dim + cache + 2 * block) + (
            outputs if self.inference.reduced else 0)
