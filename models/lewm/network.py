"""LeWorldModel's networks, read bottom-up: the ViT encoder, the BatchNorm MLP,
the action embedder, the AdaLN-zero block and the autoregressive predictor.

Written from the paper (Maes, Le Lidec, Scieur, LeCun, Balestriero, 2026) and
the behaviour of the reference code (le-wm `module.py`, `jepa.py`; its encoder
is Hugging Face's `ViTModel` built by stable-pretraining's `vit_hf`). Module
names are this project's; `models/lewm/checkpoint.py` maps the published
state dict onto them. Shapes: B batch, T frames, N tokens, D width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.lewm.config import LeWMConfig


# Encoder: a ViT whose CLS token describes the frame ---------------------------------
class ViTBlock(nn.Module):
    """Pre-norm ViT layer (Hugging Face `ViTLayer`): separate q/k/v projections with bias, exact GELU."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp_dim), nn.Linear(mlp_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.norm1(x)
        q, k, v = (p(h).view(b, n, self.heads, d // self.heads).transpose(1, 2) for p in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d/heads)
        x = x + self.out(a.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViTEncoder(nn.Module):
    """(B, 3, S, S) normalised pixels -> (B, vit_dim): the final-norm CLS token."""

    def __init__(self, c: LeWMConfig) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, c.vit_dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.vit_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_patches + 1, c.vit_dim))
        self.blocks = nn.ModuleList(ViTBlock(c.vit_dim, c.vit_heads, c.vit_mlp_dim, c.vit_eps)
                                    for _ in range(c.vit_depth))
        self.norm = nn.LayerNorm(c.vit_dim, eps=c.vit_eps)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)  # (B, P, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed  # (B, 1+P, D)
        for block in self.blocks:
            x = block(x)
        # Only the CLS token is kept; LayerNorm is per token, so normalising it alone is exact.
        return self.norm(x[:, 0])


# Projector and pred_proj ---------------------------------------------------------------
class BatchNormMLP(nn.Module):
    """Linear -> BatchNorm1d -> GELU -> Linear on (M, in) rows. BatchNorm uses its running
    statistics: serving refuses train mode, where a batch of candidates would share statistics."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int) -> None:
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.Linear(hidden, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("LeWM's BatchNorm MLPs only run in eval mode (running statistics); call .eval()")
        return self.fc2(F.gelu(self.norm(self.fc1(x))))


# Actions -------------------------------------------------------------------------------
class ActionEmbedder(nn.Module):
    """(..., action_dim) normalised model actions -> (..., embed_dim), per step:
    le-wm's kernel-1 Conv1d (a per-step linear map, held here as a Linear) then a SiLU MLP."""

    def __init__(self, c: LeWMConfig) -> None:
        super().__init__()
        hidden = c.action_mlp_scale * c.embed_dim
        self.smooth = nn.Linear(c.action_dim, c.action_smoothed_dim)
        self.fc1, self.fc2 = nn.Linear(c.action_smoothed_dim, hidden), nn.Linear(hidden, c.embed_dim)

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(self.smooth(actions))))


# Predictor -----------------------------------------------------------------------------
def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class KVCache:
    """Keys and values of the frames already in the window, per block: each (B, heads, t, dh)."""

    def __init__(self, depth: int) -> None:
        self.k: list[torch.Tensor | None] = [None] * depth
        self.v: list[torch.Tensor | None] = [None] * depth


class AdaLNBlock(nn.Module):
    """Transformer block with AdaLN-zero conditioning on the action embedding (DiT, Peebles & Xie 2023).

    Each token's own action gives a shift, a scale and a gate for both the attention
    and the MLP branch. As in le-wm, each branch also starts with its own affine
    LayerNorm (eps 1e-5) after the modulated non-affine one (eps 1e-6)."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.attn_norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.mlp_norm, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, mlp_dim), nn.Linear(mlp_dim, dim)
        self.adaln = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.adaln.weight)  # "-zero": every block starts as the identity
        nn.init.zeros_(self.adaln.bias)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.dim_head).transpose(1, 2)  # (B, heads, N, dh)

    def forward(self, x: torch.Tensor, c: torch.Tensor, last_only: bool = False,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """x, c: (B, N, D) tokens and their conditions; frame-causal attention.

        last_only: return only the last token, (B, 1, D); keys and values still
        cover all N. cache: x holds only the newest frame(s); earlier frames' keys
        and values come from `cache` (and this call's are appended to it)."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaln(F.silu(c)).chunk(6, dim=-1)  # each (B, N, D)
        q, k, v = self.to_qkv(self.attn_norm(_modulate(self.norm1(x), shift_a, scale_a))).chunk(3, dim=-1)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # (B, heads, N, dh)
        causal = True
        if cache is not None:
            if cache.k[layer] is not None:
                k, v = torch.cat([cache.k[layer], k], dim=2), torch.cat([cache.v[layer], v], dim=2)
            cache.k[layer], cache.v[layer] = k, v
            causal = q.shape[2] > 1  # a single new token sees every cached one
        if last_only:
            x, q = x[:, -1:], q[:, :, -1:]
            gate_a, shift_m, scale_m, gate_m = gate_a[:, -1:], shift_m[:, -1:], scale_m[:, -1:], gate_m[:, -1:]
            causal = False  # the last token sees the whole window
        a = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, heads, Nq, dh)
        b, _, n, _ = a.shape
        x = x + gate_a * self.to_out(a.transpose(1, 2).reshape(b, n, self.heads * self.dim_head))
        h = self.mlp_norm(_modulate(self.norm2(x), shift_m, scale_m))
        return x + gate_m * self.fc2(F.gelu(self.fc1(h)))


class Predictor(nn.Module):
    """le-wm's `ARPredictor`: one token per frame, a learned position per window slot,
    frame-causal attention, conditioned on each frame's action embedding.

    forward(emb (B, T, E), act_emb (B, T, E)) -> (B, T, E) (or (B, 1, E) with last_only),
    T <= num_hist; the position of a frame is its slot in the window."""

    def __init__(self, c: LeWMConfig) -> None:
        super().__init__()
        d = c.predictor_dim
        self.pos_embedding = nn.Parameter(torch.randn(1, c.num_hist, c.embed_dim))
        proj = c.predictor_dim != c.embed_dim
        self.input_proj = nn.Linear(c.embed_dim, d) if proj else nn.Identity()
        self.cond_proj = nn.Linear(c.embed_dim, d) if proj else nn.Identity()
        self.output_proj = nn.Linear(d, c.embed_dim) if proj else nn.Identity()
        self.blocks = nn.ModuleList(AdaLNBlock(d, c.heads, c.dim_head, c.mlp_dim) for _ in range(c.depth))
        self.norm = nn.LayerNorm(d)

    def forward(self, emb: torch.Tensor, act_emb: torch.Tensor, last_only: bool = False,
                cache: KVCache | None = None, start: int = 0) -> torch.Tensor:
        """start: the window slot of emb's first frame (> 0 only with a cache holding slots 0..start-1)."""
        t = emb.shape[1]
        x = self.input_proj(emb + self.pos_embedding[:, start:start + t])  # (B, T, d)
        c = self.cond_proj(act_emb)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, c, last_only=last_only and i == last, cache=cache, layer=i)
        return self.output_proj(self.norm(x))
