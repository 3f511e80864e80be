"""Frame-causal transformer predictor (DINO-WM's `ViTPredictor`), in one file.

Tokens of `n` frames, `p` tokens each, are flattened to a sequence of n*p
tokens; a learned absolute position embedding covers `num_hist` frames. The
attention mask is block lower-triangular: every token of frame f sees all
tokens of frames <= f. The output at frame f is the prediction of frame f+1.

Pre-norm blocks as in DINO-WM: `x = x + attn(norm(x)); x = x + mlp(norm(x))`,
`to_qkv` without bias, a final LayerNorm.

Planning only reads the prediction for the *last* frame of the window, so
`forward(..., last_only=True)` computes the last block's queries, MLP and the
final norm for those p tokens alone; every earlier block still needs all
tokens (they are the keys and values of the last block).

`extend(x, cache)` appends one frame to a window that starts at position 0:
because of the frame-causal mask, the states of earlier frames do not depend
on later ones, so their keys and values (kept in a `KVCache`) are exactly
those of a full forward, and only the new frame's p tokens are computed.
This holds while the window grows from position 0; once it slides, every
frame moves to another learned position and must be recomputed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.dropout = dropout

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.dim_head).transpose(1, 2)  # (B, nh, T, hs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, queries: int | None = None) -> torch.Tensor:
        """x: (B, T, dim). mask: (T, T) bool, True = may attend, or None.

        queries: compute outputs only for the last `queries` tokens, which then
        attend to all T tokens (they belong to the last frame, so no mask).
        Returns (B, T or queries, dim).
        """
        h = self.norm(x)
        inner = self.heads * self.dim_head
        if queries is None:
            q, k, v = self.to_qkv(h).split(inner, dim=-1)
        else:
            w = self.to_qkv.weight  # (3*inner, dim): rows [q | k | v]
            q = F.linear(h[:, -queries:], w[:inner])
            k, v = F.linear(h, w[inner:]).split(inner, dim=-1)
            mask = None
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v),
                                             attn_mask=mask, dropout_p=drop)  # (B, nh, Tq, hs)
        b, _, tq, _ = out.shape
        out = out.transpose(1, 2).reshape(b, tq, inner)  # (B, Tq, inner)
        return F.dropout(self.to_out(out), drop, self.training)

    def extend(self, x: torch.Tensor, kv: torch.Tensor, start: int) -> torch.Tensor:
        """Inference: attention outputs of the newest frame's tokens only.

        x: (B, p, dim) the new frame; kv: (B, T_max, 2*inner) keys | values,
        those of earlier tokens at [:, :start]; the new frame's are written at
        [:, start:start+p]. The new frame sees every earlier token and its own
        (frame-causal), so no mask. Returns (B, p, dim).
        """
        inner = self.heads * self.dim_head
        q, kv_new = self.to_qkv(self.norm(x)).split([inner, 2 * inner], dim=-1)
        end = start + x.shape[1]
        kv[:, start:end] = kv_new
        k, v = kv[:, :end].split(inner, dim=-1)  # (B, end, inner) each, strided views
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))  # (B, nh, p, hs)
        b, _, tq, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, tq, inner))  # (B, p, dim)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(F.gelu(self.fc1(self.norm(x))), self.dropout, self.training)
        return F.dropout(self.fc2(h), self.dropout, self.training)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = Attention(dim, heads, dim_head, dropout)
        self.ff = FeedForward(dim, mlp_dim, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, queries: int | None = None) -> torch.Tensor:
        a = self.attn(x, mask, queries)
        x = (x if queries is None else x[:, -queries:]) + a
        return x + self.ff(x)

    def extend(self, x: torch.Tensor, kv: torch.Tensor, start: int) -> torch.Tensor:
        x = x + self.attn.extend(x, kv, start)
        return x + self.ff(x)


def frame_causal_mask(frames: int, tokens_per_frame: int, device: torch.device | None = None) -> torch.Tensor:
    """(frames*p, frames*p) bool mask, True where a token may attend (frame_k <= frame_q)."""
    frame_id = torch.arange(frames * tokens_per_frame, device=device) // tokens_per_frame
    return frame_id[:, None] >= frame_id[None, :]


class KVCache:
    """Keys and values of the frames a predictor has seen, for `Predictor.extend`.

    kv: (depth, B, num_frames * p, 2 * inner), preallocated once per rollout
    (no growing concatenation); `length` tokens of it are filled.
    """

    def __init__(self, predictor: "Predictor", batch: int, frames: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        attn = predictor.blocks[0].attn
        inner = attn.heads * attn.dim_head
        tokens = min(frames, predictor.num_frames) * predictor.tokens_per_frame
        self.kv = torch.empty(len(predictor.blocks), batch, tokens, 2 * inner, device=device, dtype=dtype)
        self.length = 0


class Predictor(nn.Module):
    def __init__(self, dim: int, tokens_per_frame: int, num_frames: int, depth: int, heads: int,
                 dim_head: int, mlp_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.tokens_per_frame, self.num_frames = tokens_per_frame, num_frames
        self.pos_embedding = nn.Parameter(torch.randn(1, num_frames * tokens_per_frame, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, dim_head, mlp_dim, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.dropout = dropout
        self.register_buffer("mask", frame_causal_mask(num_frames, tokens_per_frame), persistent=False)

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x: (B, n*p, dim) tokens of n <= num_frames frames.

        Returns (B, n*p, dim): the prediction of frame f+1 at frame f's tokens;
        with last_only, (B, p, dim): the prediction that follows the last frame.
        """
        t = x.shape[1]
        p = self.tokens_per_frame
        if t % p or t > self.pos_embedding.shape[1]:
            raise ValueError(f"predictor got {t} tokens; expected a multiple of {p} up to "
                             f"{self.pos_embedding.shape[1]} ({self.num_frames} frames)")
        x = F.dropout(x + self.pos_embedding[:, :t], self.dropout, self.training)
        mask = self.mask[:t, :t] if t > p else None  # one frame: nothing to mask
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, mask, queries=p if (last_only and i == last) else None)
        return self.norm(x)

    def extend(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Inference: predict from one more frame of a window that starts at position 0.

        x: (B, p, dim) tokens of the frame at position `cache.length / p`; the
        cache holds the earlier frames' keys and values and receives this
        frame's. Returns (B, p, dim), equal (to float tolerance) to
        `forward(window, last_only=True)` over the whole window.
        """
        p, start = x.shape[1], cache.length
        if p != self.tokens_per_frame or start + p > cache.kv.shape[2]:
            raise ValueError(f"extend got {p} tokens at position {start}; expected one frame of "
                             f"{self.tokens_per_frame} within {cache.kv.shape[2]} cached tokens")
        x = x + self.pos_embedding[:, start:start + p]
        for block, kv in zip(self.blocks, cache.kv):
            x = block.extend(x, kv, start)
        cache.length = start + p
        return self.norm(x)
