"""DINO-WM import: checkpoints pickled by DINO-WM-shaped classes convert to
artifacts whose encoder, predictor and rollout match DINO-WM's own forward
pass, and nothing outside the allow-list is ever unpickled.

The DINO-WM, DINOv2 and accelerate classes below are written here from the
published equations (DINO-WM `models/vit.py`, `models/proprio.py`,
`models/visual_world_model.py`; DINOv2 `vision_transformer.py`), with manual
masked-softmax attention, and registered under their published module paths
only while a checkpoint is pickled. They are also the reference forward pass.
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from models import load_model
from models.dino_wm_checkpoint import CheckpointError
from models.import_dino_wm import DinoWMImportError, import_run, main, read_stats
from planning import CEMConfig, plan

IMG, NUM_HIST, FRAMESKIP, RAW_A, PROPRIO = 224, 3, 2, 2, 4  # DINO-WM's 224 px; smaller runs use 112
TOL = dict(rtol=1e-4, atol=1e-4)
_PUBLISHED: dict[type, str] = {}


def published(path: str):
    """Give a class the module path and name DINO-WM/DINOv2/accelerate pickle it under."""
    def wrap(cls: type) -> type:
        cls.__module__, cls.__qualname__ = path.rsplit(".", 1)
        cls.__name__ = cls.__qualname__
        _PUBLISHED[cls] = path
        return cls
    return wrap


def _register(mp: pytest.MonkeyPatch) -> None:
    """Make the published module paths importable for pickling (undone when `mp` closes)."""
    for cls, path in _PUBLISHED.items():
        module, name = path.rsplit(".", 1)
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub not in sys.modules:
                mp.setitem(sys.modules, sub, types.ModuleType(sub))
        mp.setattr(sys.modules[module], name, cls, raising=False)


# DINO-WM models/vit.py -------------------------------------------------------
def frame_mask(num_patches: int, num_frames: int) -> torch.Tensor:
    """(1, 1, F*P, F*P): 1 where a token of frame i may attend to frame j <= i."""
    frame = torch.arange(num_frames * num_patches) // num_patches
    return (frame[:, None] >= frame[None, :]).float()[None, None]


@published("models.vit.Attention")
class Attention(nn.Module):
    def __init__(self, dim, heads, dim_head, dropout, num_patches, num_frames):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.attend = nn.Softmax(dim=-1)
        self.dropout = nn.Dropout(dropout)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = (nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
                       if not (heads == 1 and dim_head == dim) else nn.Identity())
        self.bias = frame_mask(num_patches, num_frames)  # a plain attribute, as published

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2)
                   for z in self.to_qkv(self.norm(x)).chunk(3, dim=-1))  # (B, h, T, d)
        dots = (q @ k.transpose(-1, -2)) * self.scale
        dots = dots.masked_fill(self.bias[:, :, :t, :t] == 0, float("-inf"))
        out = self.dropout(self.attend(dots)) @ v  # (B, h, T, d)
        return self.to_out(out.transpose(1, 2).reshape(b, t, -1))


@published("models.vit.FeedForward")
class FeedForward(nn.Module):
    def __init__(self, dim, hidden, dropout):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


@published("models.vit.Transformer")
class Transformer(nn.Module):
    def __init__(self, dim, depth, heads, dim_head, mlp_dim, dropout, num_patches, num_frames):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, heads, dim_head, dropout, num_patches, num_frames),
                           FeedForward(dim, mlp_dim, dropout)]) for _ in range(depth))

    def forward(self, x):
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)


@published("models.vit.ViTPredictor")
class ViTPredictor(nn.Module):
    def __init__(self, *, num_patches, num_frames, dim, depth, heads, mlp_dim, dim_head, dropout=0.1):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.randn(1, num_frames * num_patches, dim))
        self.dropout = nn.Dropout(dropout)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim, dropout, num_patches, num_frames)
        self.pool = "mean"

    def forward(self, x):
        return self.transformer(self.dropout(x + self.pos_embedding[:, :x.shape[1]]))


@published("models.proprio.ProprioceptiveEmbedding")
class ProprioceptiveEmbedding(nn.Module):
    def __init__(self, in_chans, emb_dim):
        super().__init__()
        self.num_frames, self.tubelet_size, self.in_chans, self.emb_dim = 1, 1, in_chans, emb_dim
        self.patch_embed = nn.Conv1d(in_chans, emb_dim, kernel_size=1, stride=1)

    def forward(self, x):  # (B, T, D) -> (B, T, E)
        return self.patch_embed(x.permute(0, 2, 1)).permute(0, 2, 1)


# DINO-WM models/vqvae.py (only pickled, never run) ------------------------------
@published("models.vqvae.Quantize")
class Quantize(nn.Module):
    def __init__(self, dim, n_embed):
        super().__init__()
        self.dim, self.n_embed, self.decay, self.eps = dim, n_embed, 0.99, 1e-5
        self.register_buffer("embed", torch.randn(dim, n_embed))
        self.register_buffer("cluster_size", torch.zeros(n_embed))


@published("models.vqvae.ResBlock")
class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c, c, 1))


@published("models.vqvae.VQVAE")
class VQVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.quantize = False
        self.quantize_b = Quantize(8, 16)
        self.dec = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), ResBlock(8), nn.ConvTranspose2d(8, 3, 4, 2, 1))
        self.info = "tiny"


# DINOv2 (hub parameter names) -------------------------------------------------
@published("dinov2.layers.patch_embed.PatchEmbed")
class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.patch_size = (patch, patch)
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.norm = nn.Identity()

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))  # (N, h*w, dim)


@published("dinov2.layers.layer_scale.LayerScale")
class LayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.inplace = False
        self.gamma = nn.Parameter(1e-5 * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


@published("dinov2.layers.attention.MemEffAttention")
class DinoAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop, self.proj, self.proj_drop = nn.Dropout(0.0), nn.Linear(dim, dim), nn.Dropout(0.0)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = ((qkv[0] * self.scale) @ qkv[1].transpose(-2, -1)).softmax(dim=-1)  # (B, h, N, N)
        return self.proj((attn @ qkv[2]).transpose(1, 2).reshape(b, n, c))


@published("dinov2.layers.mlp.Mlp")
class Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1, self.act, self.fc2, self.drop = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(0.0)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


@published("dinov2.layers.block.NestedTensorBlock")
class NestedTensorBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.attn, self.ls1 = nn.LayerNorm(dim, eps=1e-6), DinoAttention(dim, heads), LayerScale(dim)
        self.norm2, self.mlp, self.ls2 = nn.LayerNorm(dim, eps=1e-6), Mlp(dim), LayerScale(dim)
        self.sample_drop_ratio = 0.0

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


@published("dinov2.models.vision_transformer.DinoVisionTransformer")
class DinoVisionTransformer(nn.Module):
    def __init__(self, depth):
        super().__init__()
        dim, self.patch_size, self.num_register_tokens = 384, 14, 0
        self.interpolate_offset, self.interpolate_antialias = 0.1, False
        self.patch_embed = PatchEmbed(14, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + 37 * 37, dim))
        self.register_tokens = None
        self.blocks = nn.ModuleList(NestedTensorBlock(dim, 6) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(1, dim))

    def interpolate_pos_encoding(self, x, w, h):
        n, m = x.shape[1] - 1, self.pos_embed.shape[1] - 1
        if n == m and w == h:
            return self.pos_embed
        side, dim = int(math.sqrt(m)), x.shape[-1]
        w0, h0 = w // self.patch_size, h // self.patch_size
        patch = F.interpolate(self.pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2), mode="bicubic",
                              scale_factor=((w0 + 0.1) / side, (h0 + 0.1) / side), antialias=False)
        patch = patch.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((self.pos_embed[:, :1], patch), dim=1)

    def forward_features(self, x):
        _, _, w, h = x.shape
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x, w, h)
        for blk in self.blocks:
            x = blk(x)
        return {"x_norm_patchtokens": self.norm(x)[:, 1:]}


@published("models.dino.DinoV2Encoder")
class DinoV2Encoder(nn.Module):
    def __init__(self, base_model):
        super().__init__()
        self.name, self.feature_key, self.emb_dim, self.patch_size, self.latent_ndim = (
            "dinov2_vits14", "x_norm_patchtokens", 384, 14, 2)
        self.base_model = base_model


# accelerate (an optimiser as `accelerate.prepare` wraps it) ------------------------
@published("accelerate.utils.dataclasses.DistributedType")
class DistributedType(str, enum.Enum):
    NO = "NO"
    MULTI_GPU = "MULTI_GPU"


@published("accelerate.state.AcceleratorState")
class AcceleratorState:
    def __init__(self):
        self.distributed_type, self.device, self.num_processes, self._mixed_precision = (
            DistributedType.NO, torch.device("cpu"), 1, "no")


@published("accelerate.state.GradientState")
class GradientState:
    def __init__(self):
        self.sync_gradients, self.active_dataloader, self.dataloader_references = True, None, [None]


@published("accelerate.optimizer.AcceleratedOptimizer")
class AcceleratedOptimizer:
    def __init__(self, optimizer):
        self.optimizer, self.scaler, self.device_placement, self._is_overflow = optimizer, None, True, False
        self.accelerator_state, self.gradient_state = AcceleratorState(), GradientState()


def accelerated(params, loss_of, cls=torch.optim.AdamW) -> AcceleratedOptimizer:
    opt = cls(params, lr=1e-3)
    with torch.enable_grad():
        loss_of().backward()
    opt.step()
    return AcceleratedOptimizer(opt)


# DINO-WM's VWorldModel, reference ------------------------------------------------
@dataclass
class Reference:
    dino: DinoVisionTransformer
    predictor: ViTPredictor
    action_encoder: ProprioceptiveEmbedding
    proprio_encoder: ProprioceptiveEmbedding
    concat_dim: int
    img_size: int

    def encode(self, visual, proprio, act):
        """visual (B, T, 3, 224, 224) in [-1, 1]; proprio, act normalised -> z (B, T, P, D)."""
        b, t = visual.shape[:2]
        side = self.img_size // 16  # DINO-WM: decoder_scale 16 sets the patch grid
        x = F.interpolate(visual.flatten(0, 1), size=(side * 14, side * 14), mode="bilinear",
                          antialias=True, align_corners=False)  # transforms.Resize(196) on tensors
        vis = self.dino.forward_features(x)["x_norm_patchtokens"].reshape(b, t, side * side, -1)
        p, a = self.proprio_encoder(proprio), self.action_encoder(act)
        if self.concat_dim == 0:
            return torch.cat([vis, p.unsqueeze(2), a.unsqueeze(2)], dim=2)
        tile = lambda e: e.unsqueeze(2).expand(-1, -1, vis.shape[2], -1)  # noqa: E731
        return torch.cat([vis, tile(p), tile(a)], dim=3)

    def predict(self, z):
        b, t, p, d = z.shape
        return self.predictor(z.reshape(b, t * p, d)).reshape(b, t, p, d)

    def replace_actions(self, z, act):
        emb = self.action_encoder(act)
        if self.concat_dim == 0:
            z[:, :, -1, :] = emb
        else:
            z[..., -emb.shape[-1]:] = emb.unsqueeze(2).expand(-1, -1, z.shape[2], -1)
        return z

    def separate(self, z):
        if self.concat_dim == 0:
            return z[:, :, :-2, :], z[:, :, -2, :]
        ea, ep = self.action_encoder.emb_dim, self.proprio_encoder.emb_dim
        return z[..., :-(ep + ea)], z[:, :, 0, -(ep + ea):-ea]

    def rollout(self, visual0, proprio0, act):
        """DINO-WM `rollout` from one observed frame: returns (visual, proprio) of frames 0..H."""
        z = self.encode(visual0, proprio0, act[:, :1])
        future = act[:, 1:]
        for t in range(future.shape[1]):
            z_new = self.predict(z[:, -NUM_HIST:])[:, -1:]
            z = torch.cat([z, self.replace_actions(z_new, future[:, t:t + 1])], dim=1)
        z = torch.cat([z, self.predict(z[:, -NUM_HIST:])[:, -1:]], dim=1)
        return self.separate(z)


def randomize(module: nn.Module) -> None:
    """Weights of every scale a trained model has (published inits leave LayerScale at 1e-5)."""
    for name, p in module.named_parameters():
        if name.endswith("pos_embed"):
            nn.init.normal_(p, std=0.5)
        elif p.ndim >= 2:
            nn.init.normal_(p, std=p[0].numel() ** -0.5)
        elif name.endswith("gamma"):
            nn.init.uniform_(p, 0.5, 1.5)
        elif "norm" in name and name.endswith("weight"):
            nn.init.normal_(p, mean=1.0, std=0.1)
        else:
            nn.init.normal_(p, std=0.1)


# Run folders -------------------------------------------------------------------
@dataclass
class Run:
    dir: Path
    encoder_weights: Path
    stats: Path
    ref: Reference


STATS = {"action_mean": [0.3, -0.2], "action_std": [1.5, 0.7], "proprio_mean": [10.0, -4.0, 2.0, 0.5],
         "proprio_std": [5.0, 2.0, 1.0, 0.25],
         "provenance": {"dataset": "/data/wall", "split": "train", "num_episodes": 90, "num_frames": 9000}}


def hydra_config(concat_dim: int, emb: int, img_size: int) -> dict:
    return {"img_size": img_size, "frameskip": FRAMESKIP, "concat_dim": concat_dim, "normalize_action": True,
            "action_emb_dim": emb, "num_action_repeat": 1, "proprio_emb_dim": emb, "num_proprio_repeat": 1,
            "num_hist": NUM_HIST, "num_pred": 1, "has_predictor": True, "has_decoder": True,
            "model": {"_target_": "models.visual_world_model.VWorldModel", "train_encoder": False},
            "encoder": {"_target_": "models.dino.DinoV2Encoder", "name": "dinov2_vits14",
                        "feature_key": "x_norm_patchtokens"},
            "predictor": {"_target_": "models.vit.ViTPredictor", "depth": 2, "heads": 2, "mlp_dim": 64,
                          "dropout": 0.1, "emb_dropout": 0, "pool": "mean"},
            "env": {"name": "wall", "dataset": {"_target_": "datasets.wall_dset.load_wall_slice_train_val",
                                                "data_path": "/data/wall", "split_ratio": 0.9}}}


def make_run(root: Path, concat_dim: int = 1, train_encoder: bool = False, seed: int = 0, img_size: int = IMG) -> Run:
    torch.manual_seed(seed)
    emb = 10 if concat_dim == 1 else 384
    tokens = (img_size // 16) ** 2 + (2 if concat_dim == 0 else 0)
    dim = 384 + 2 * emb if concat_dim == 1 else 384
    dino = DinoVisionTransformer(depth=2)
    predictor = ViTPredictor(num_patches=tokens, num_frames=NUM_HIST, dim=dim, depth=2, heads=2, mlp_dim=64,
                             dim_head=16)
    act_enc, prop_enc = ProprioceptiveEmbedding(FRAMESKIP * RAW_A, emb), ProprioceptiveEmbedding(PROPRIO, emb)
    for m in (dino, predictor, act_enc, prop_enc):
        randomize(m)
    decoder = VQVAE()
    ckpt = {"epoch": 7, "predictor": predictor,
            "predictor_optimizer": accelerated(predictor.parameters(), lambda: predictor.pos_embedding.square().sum()),
            "decoder": decoder,
            "decoder_optimizer": accelerated(decoder.parameters(), lambda: sum(p.sum() for p in decoder.parameters()),
                                             torch.optim.Adam),
            "action_encoder": act_enc, "proprio_encoder": prop_enc}
    if train_encoder:
        ckpt["encoder"] = DinoV2Encoder(dino)
    run = root / "outputs" / "2025-01-02" / f"12-00-0{seed}"
    (run / "checkpoints").mkdir(parents=True)
    cfg = hydra_config(concat_dim, emb, img_size)
    cfg["model"]["train_encoder"] = train_encoder
    (run / "hydra.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.MonkeyPatch.context() as mp:
        _register(mp)
        torch.save(ckpt, run / "checkpoints" / "model_latest.pth")
    enc_path = root / f"dinov2_vits14_pretrain_{seed}.pth"
    torch.save(dino.state_dict(), enc_path)
    stats = root / "stats.json"
    stats.write_text(json.dumps(STATS))
    ref = Reference(dino, predictor, act_enc, prop_enc, concat_dim, img_size)
    for m in (dino, predictor, act_enc, prop_enc):
        m.eval().requires_grad_(False)
    return Run(run, enc_path, stats, ref)


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory) -> tuple[Run, object]:
    run = make_run(tmp_path_factory.mktemp("feature"))
    out = run.dir / "imported.pt"
    import_run(run.dir, read_stats(run.stats), out, run.encoder_weights)
    return run, load_model(out)


def observation(b: int, seed: int = 1, img_size: int = IMG):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (b, img_size, img_size, 3), generator=g, dtype=torch.uint8)
    proprio = torch.tensor(STATS["proprio_mean"]) + torch.randn(b, PROPRIO, generator=g) * 3
    actions = torch.randn(b, 5 * FRAMESKIP, RAW_A, generator=g)  # 5 model steps, env units
    return frames, proprio, actions


def dino_wm_inputs(frames, proprio, actions):
    """DINO-WM's preprocessing: Normalize(0.5, 0.5) frames; dataset-normalised proprio and actions,
    actions grouped `frameskip` env steps per model step."""
    visual = (frames.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    p = (proprio - torch.tensor(STATS["proprio_mean"])) / torch.tensor(STATS["proprio_std"])
    a = (actions - torch.tensor(STATS["action_mean"])) / torch.tensor(STATS["action_std"])
    return visual[:, None], p[:, None], a.reshape(a.shape[0], -1, FRAMESKIP * RAW_A)


# Equivalence -----------------------------------------------------------------------
@torch.no_grad()
def test_encoder_tokens_match_dinov2_on_resized_frames(feature_run):
    run, model = feature_run
    frames, proprio, actions = observation(2)
    visual, p, a = dino_wm_inputs(frames, proprio, actions)
    want = run.ref.encode(visual, p, a[:, :1])[:, 0, :, :384]
    z = model.encode_observation(frames, proprio)
    torch.testing.assert_close(z.visual, want, **TOL)
    torch.testing.assert_close(z.proprio, run.ref.proprio_encoder(p)[:, 0], **TOL)


@torch.no_grad()
def test_predictor_matches_vit_predictor_on_every_window(feature_run):
    run, model = feature_run
    tokens, dim = model.config.tokens_per_frame, model.config.token_dim
    x = torch.randn(1, NUM_HIST * tokens, dim)
    for frames in (1, NUM_HIST):
        window = x[:, :frames * tokens]
        want = run.ref.predictor(window)
        torch.testing.assert_close(model.predictor(window), want, **TOL)
        torch.testing.assert_close(model.predictor(window, last_only=True), want[:, -tokens:], **TOL)


@torch.no_grad()
def test_rollout_matches_dino_wm_rollout_from_env_units(feature_run):
    run, model = feature_run
    frames, proprio, actions = observation(2, seed=3)
    visual, p, a = dino_wm_inputs(frames, proprio, actions)
    torch.testing.assert_close(model.codec.to_model(actions), a)
    want_visual, want_proprio = run.ref.rollout(visual, p, a)  # frames 0..H
    got = model.rollout(model.encode_observation(frames, proprio), model.codec.to_model(actions))
    torch.testing.assert_close(got.visual, want_visual[:, 1:], **TOL)
    torch.testing.assert_close(got.proprio, want_proprio[:, 1:], **TOL)


@torch.no_grad()
def test_token_concat_mode_matches_dino_wm(tmp_path):
    run = make_run(tmp_path, concat_dim=0, img_size=112)
    model = import_run(run.dir, read_stats(run.stats), tmp_path / "m.pt", run.encoder_weights)
    assert model.config.concat_mode == "token" and model.config.tokens_per_frame == 7 * 7 + 2
    frames, proprio, actions = observation(1, seed=4, img_size=112)
    visual, p, a = dino_wm_inputs(frames, proprio, actions)
    want_visual, want_proprio = run.ref.rollout(visual, p, a[:, :3])
    got = model.rollout(model.encode_observation(frames, proprio), a[:, :3])
    torch.testing.assert_close(got.visual, want_visual[:, 1:], **TOL)
    torch.testing.assert_close(got.proprio, want_proprio[:, 1:], **TOL)


@torch.no_grad()
def test_fine_tuned_encoder_is_taken_from_the_checkpoint(tmp_path):
    run = make_run(tmp_path, train_encoder=True, seed=2, img_size=112)
    with pytest.raises(DinoWMImportError, match="drop it"):
        import_run(run.dir, read_stats(run.stats), tmp_path / "m.pt", run.encoder_weights)
    model = import_run(run.dir, read_stats(run.stats), tmp_path / "m.pt")
    assert model.config.vit_image_size == 98
    frames, proprio, actions = observation(1, img_size=112)
    visual, p, a = dino_wm_inputs(frames, proprio, actions)
    torch.testing.assert_close(model.encode_observation(frames, proprio).visual,
                               run.ref.encode(visual, p, a[:, :1])[:, 0, :, :384], **TOL)


def test_artifact_records_architecture_statistics_and_provenance(feature_run):
    run, model = feature_run
    c = model.config
    assert (c.encoder, c.image_size, c.vit_image_size, c.vit_depth, c.num_patches) == ("dinov2_vits14", 224, 196, 2, 196)
    assert (c.frameskip, c.raw_action_dim, c.proprio_dim, c.token_dim, c.depth, c.heads, c.dim_head, c.mlp_dim) == (
        FRAMESKIP, RAW_A, PROPRIO, 404, 2, 2, 16, 64)
    assert c.name == "dino-wm-2025-01-02-12-00-00"
    torch.testing.assert_close(model.stats.action_std, torch.tensor(STATS["action_std"]))
    assert model.stats.provenance["split"] == "train" and model.stats.provenance["stats_file"] == str(run.stats)
    assert model.metadata["source"] == "dino_wm" and model.metadata["epoch"] == 7
    assert len(model.metadata["checkpoint_sha256"]) == 64 and model.metadata["encoder_weights_sha256"]
    assert not model.training and not any(p.requires_grad for p in model.parameters())


@torch.no_grad()
def test_imported_model_plans(feature_run):
    _, model = feature_run
    frames, proprio, _ = observation(1, seed=5)
    z_obs = model.encode_observation(frames, proprio)
    z_goal = model.encode_observation(*observation(1, seed=6)[:2])
    cfg = CEMConfig(horizon=2, num_samples=6, topk=2, opt_steps=2, min_iterations=0)
    (result,) = plan(model, z_obs, z_goal, cfg, seeds=[0])
    assert result.actions.shape == (2, model.config.action_dim) and torch.isfinite(result.actions).all()


def test_cli_writes_an_artifact(feature_run, tmp_path):
    run, _ = feature_run
    out = tmp_path / "cli.pt"
    assert main([str(run.dir), "--encoder-weights", str(run.encoder_weights), "--stats", str(run.stats),
                 "--out", str(out), "--name", "pusht"]) == 0
    assert load_model(out).config.name == "pusht"


# Statistics ----------------------------------------------------------------------
def test_cli_refuses_to_write_without_statistics(feature_run, tmp_path):
    run, _ = feature_run
    out = tmp_path / "m.pt"
    with pytest.raises(SystemExit):
        main([str(run.dir), "--encoder-weights", str(run.encoder_weights), "--out", str(out)])
    with pytest.raises(DinoWMImportError, match="statistics are required"):
        import_run(run.dir, None, out, run.encoder_weights)  # type: ignore[arg-type]
    assert not out.exists()


@pytest.mark.parametrize("change, message", [
    ({"split": "all"}, "training split"),
    ({"split": None}, "split"),
])
def test_statistics_not_declared_as_the_train_split_are_refused(feature_run, tmp_path, capsys, change, message):
    run, _ = feature_run
    prov = {k: v for k, v in {**STATS["provenance"], **change}.items() if v is not None}
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({**STATS, "provenance": prov}))
    out = tmp_path / "m.pt"
    assert main([str(run.dir), "--encoder-weights", str(run.encoder_weights), "--stats", str(stats),
                 "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_npz_statistics_read_like_json(tmp_path):
    npz = tmp_path / "stats.npz"
    np.savez(npz, **{k: np.asarray(v, np.float32) for k, v in STATS.items() if k != "provenance"},
             provenance=json.dumps(STATS["provenance"]))
    json_path = tmp_path / "stats.json"
    json_path.write_text(json.dumps(STATS))
    a, b = read_stats(npz), read_stats(json_path)
    torch.testing.assert_close(a.proprio_std, b.proprio_std)
    assert a.provenance["num_episodes"] == 90


def test_unnormalised_run_needs_identity_statistics(tmp_path):
    run = make_run(tmp_path, img_size=112)
    cfg = yaml.safe_load((run.dir / "hydra.yaml").read_text())
    (run.dir / "hydra.yaml").write_text(yaml.safe_dump({**cfg, "normalize_action": False}))
    with pytest.raises(DinoWMImportError, match="mean 0 and std 1"):
        import_run(run.dir, read_stats(run.stats), tmp_path / "m.pt", run.encoder_weights)


@pytest.mark.parametrize("change, message", [
    ({"num_action_repeat": 2}, "num_action_repeat=2"),
    ({"encoder": {"name": "dinov2_vitb14"}}, "only dinov2_vits14"),
    ({"predictor": {"depth": 6, "heads": 2, "mlp_dim": 64}}, "predictor.depth=6"),
    ({"num_hist": 2}, "num_hist=2 frames of 196 tokens"),
    ({"img_size": 448}, "frames of 784 tokens"),
])
def test_config_the_project_cannot_reproduce_is_refused(feature_run, tmp_path, change, message):
    run, _ = feature_run
    cfg = yaml.safe_load((run.dir / "hydra.yaml").read_text())
    other = tmp_path / "run"
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints" / "model_latest.pth").symlink_to(run.dir / "checkpoints" / "model_latest.pth")
    (other / "hydra.yaml").write_text(yaml.safe_dump({**cfg, **change}))
    with pytest.raises(DinoWMImportError, match=re.escape(message)):
        import_run(other, read_stats(run.stats), tmp_path / "m.pt", run.encoder_weights)


# Safety --------------------------------------------------------------------------
class _Shell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@published("models.vit.NotAPredictor")
class NotAPredictor:
    pass


@pytest.mark.parametrize("payload, offender", [
    ("shell", f"{os.system.__module__}.system"),
    ("shell_inside_module", f"{os.system.__module__}.system"),
    ("unknown_class", "models.vit.NotAPredictor"),
])
def test_pickle_outside_the_allow_list_is_refused_and_runs_nothing(feature_run, tmp_path, payload, offender):
    run, _ = feature_run
    marker = tmp_path / "pwned"
    other = tmp_path / "run"
    (other / "checkpoints").mkdir(parents=True)
    (other / "hydra.yaml").write_text((run.dir / "hydra.yaml").read_text())
    predictor = run.ref.predictor
    if payload == "shell":
        ckpt = {"epoch": 1, "predictor": _Shell(marker)}
    elif payload == "shell_inside_module":
        predictor.hook = _Shell(marker)  # a payload hidden in an allow-listed module's state
        ckpt = {"epoch": 1, "predictor": predictor}
    else:
        ckpt = {"epoch": 1, "predictor": NotAPredictor()}
    with pytest.MonkeyPatch.context() as mp:
        _register(mp)
        torch.save(ckpt, other / "checkpoints" / "model_latest.pth")
    predictor.__dict__.pop("hook", None)
    with pytest.raises(CheckpointError, match=re.escape(offender)):
        import_run(other, read_stats(run.stats), tmp_path / "m.pt", run.encoder_weights)
    assert not marker.exists()
    assert not (tmp_path / "m.pt").exists()
