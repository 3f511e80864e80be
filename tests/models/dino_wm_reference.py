"""DINO-WM, DINOv2 and accelerate classes for the import tests, written from
the published equations (DINO-WM `models/vit.py`, `models/proprio.py`,
`models/visual_world_model.py`; DINOv2 `vision_transformer.py`), with manual
masked-softmax attention and no einops.

Each class carries the module path its original is pickled under
(`@published`); `register_published` makes those paths importable only while
a test pickles a checkpoint. The same classes are the reference forward pass
that imported models are compared against.
"""

from __future__ import annotations

import enum
import math
import sys
import types
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

_PUBLISHED: dict[type, str] = {}


def published(path: str):
    """Give a class the module path and name DINO-WM/DINOv2/accelerate pickle it under."""
    def wrap(cls: type) -> type:
        cls.__module__, cls.__qualname__ = path.rsplit(".", 1)
        cls.__name__ = cls.__qualname__
        _PUBLISHED[cls] = path
        return cls
    return wrap


def register_published(mp: pytest.MonkeyPatch) -> None:
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
        self.fc1, self.act = nn.Linear(dim, 4 * dim), nn.GELU()
        self.fc2, self.drop = nn.Linear(4 * dim, dim), nn.Dropout(0.0)

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
    num_hist: int

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
            z_new = self.predict(z[:, -self.num_hist:])[:, -1:]
            z = torch.cat([z, self.replace_actions(z_new, future[:, t:t + 1])], dim=1)
        z = torch.cat([z, self.predict(z[:, -self.num_hist:])[:, -1:]], dim=1)
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
