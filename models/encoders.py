"""Image encoders: normalised frames (N, 3, S, S) -> patch tokens (N, P, D).

* `ConvEncoder`: a small stride-2 CNN whose feature map is average-pooled to a
  `token_grid` x `token_grid` grid. Trained by this project (as an autoencoder,
  then frozen) for models that must plan on a CPU.
* `DinoV2Encoder`: DINOv2 ViT-S/14 with the parameter names of the official
  `dinov2_vits14` checkpoint (`patch_embed.proj`, `blocks.N.attn.qkv`,
  `ls1.gamma`, ...), so its weights load with a plain `load_state_dict`.
  Returns the normalised patch tokens (`x_norm_patchtokens`), as DINO-WM uses.
  Weights start random here; nothing is downloaded.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.config import WorldModelConfig


class ConvEncoder(nn.Module):
    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in cfg.conv_channels:
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.GroupNorm(8 if c % 8 == 0 else 1, c), nn.GELU()]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(cfg.token_grid)
        self.proj = nn.Conv2d(c_in, cfg.encoder_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, S, S) normalised -> (N, P, D) with P = token_grid**2."""
        h = self.proj(self.pool(self.net(x)))  # (N, D, g, g)
        return h.flatten(2).transpose(1, 2)  # (N, g*g, D)


# DINOv2 ViT ------------------------------------------------------------------
class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, h*w, dim)


class _LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _ViTAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, nh, T, hs)
        return self.proj(out.transpose(1, 2).reshape(n, t, c))


class _ViTMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _ViTAttention(dim, heads)
        self.ls1 = _LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _ViTMlp(dim, 4 * dim)
        self.ls2 = _LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2Encoder(nn.Module):
    # DINOv2 hub models interpolate their position grid with this offset and
    # without antialiasing; matching it keeps imported weights equivalent.
    interpolate_offset = 0.1

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        self.patch_size = cfg.vit_patch_size
        self.input_size = cfg.vit_image_size
        dim = cfg.vit_dim
        self.patch_embed = _PatchEmbed(cfg.vit_patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.vit_pos_grid ** 2, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused at inference; kept for strict loading
        self.blocks = nn.ModuleList(_ViTBlock(dim, cfg.vit_heads) for _ in range(cfg.vit_depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Position embedding for an h x w patch grid: (1, 1 + h*w, dim)."""
        grid = int(math.sqrt(self.pos_embed.shape[1] - 1))
        if h == w == grid:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:].float()
        dim = patch_pos.shape[-1]
        scale = ((w + self.interpolate_offset) / grid, (h + self.interpolate_offset) / grid)
        patch_pos = F.interpolate(
            patch_pos.reshape(1, grid, grid, dim).permute(0, 3, 1, 2),  # (1, dim, grid, grid)
            scale_factor=scale, mode="bicubic", antialias=False)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim).to(cls_pos.dtype)  # (1, h*w, dim)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, S, S) normalised -> (N, P, 384) normalised patch tokens."""
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            # DINO-WM: 224 px frames are resized to 196 px before DINOv2.
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              antialias=True, align_corners=False)
        n = x.shape[0]
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.patch_embed(x)  # (N, h*w, dim)
        tokens = torch.cat([self.cls_token.expand(n, -1, -1), tokens], dim=1)  # (N, 1+h*w, dim)
        tokens = tokens + self._pos_embed(h, w)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 1:]  # x_norm_patchtokens: (N, h*w, dim)


def build_encoder(cfg: WorldModelConfig) -> nn.Module:
    if cfg.encoder == "conv":
        return ConvEncoder(cfg)
    return DinoV2Encoder(cfg)
