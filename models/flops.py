"""Analytic FLOPs of this model family: one model, used by the server's admission and by the benchmarks.

Only matmuls (and the encoder's convolutions) are counted, 2 FLOPs per
multiply-add: ``mm(m, k, n) = 2 m k n``. LayerNorm, GELU, softmax, the
embeddings and the objective are left out (well under 1% of a DINO-WM-size
rollout; torch's ``FlopCounterMode`` agrees within 2%, tests/benchmarks).

One predictor block, with ``d`` the token width, ``i = heads * dim_head`` and
``m`` the MLP width, where ``q`` query tokens attend to ``k`` key tokens of
which ``n`` have their keys and values projected in this call:

    linear    = mm(n, d, 2i) + mm(q, d, i) + mm(q, i, d) + mm(q, d, m) + mm(q, m, d)
    attention = mm(q, i, k) + mm(q, k, i)          # QK^T and AV over every pair computed

A rollout over ``H`` steps with ``p`` tokens per frame and ``h = num_hist``
frames of history predicts frame ``t + 1`` from a window of ``w_t = min(t + 1, h)``
frames. How much of each window is computed depends on the execution:

* ``"cached"`` (`WorldModel.rollout`): while the window grows (t < h) only
  the newest frame is computed against the cached keys and values
  (q = n = p, k = w_t p, every block); once it slides, the window is
  recomputed (q = n = k = h p) except the last block, which computes the last
  frame's queries only (q = p).
* ``"recompute"``: every step recomputes its whole window, the last block
  for the last frame only (the rollout before the cache; the out-of-place
  differentiable rollout that gradient solvers backpropagate through).
* ``"dino_wm"``: DINO-WM's published rollout: every block over every token
  of the window, plus one encoder pass per sample (it re-encodes the
  observation image for every sample).

A plan scores ``iterations x samples`` rollouts plus the final plan; how
many rollouts a solver scores per iteration is the solver's business (its
settings), not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from models.config import WorldModelConfig

Execution = Literal["cached", "recompute", "dino_wm"]


def _mm(m: int, k: int, n: int) -> int:
    """FLOPs of an (m, k) @ (k, n) matmul."""
    return 2 * m * k * n


@dataclass(frozen=True)
class Flops:
    """Matmul FLOPs, split into projections + MLP (`linear`), attention products and the image encoder."""

    linear: int = 0
    attention: int = 0
    encoder: int = 0

    @property
    def total(self) -> int:
        return self.linear + self.attention + self.encoder

    def __add__(self, o: "Flops") -> "Flops":
        return Flops(self.linear + o.linear, self.attention + o.attention, self.encoder + o.encoder)

    def __mul__(self, k: int) -> "Flops":
        return Flops(self.linear * k, self.attention * k, self.encoder * k)

    def as_dict(self) -> dict[str, int]:
        return {"linear": self.linear, "attention": self.attention, "encoder": self.encoder, "total": self.total}


def block_flops(c: WorldModelConfig, queries: int, keys: int, new_kv: int | None = None) -> Flops:
    """One predictor block: `queries` tokens attend to `keys` tokens; keys and values
    are projected for `new_kv` tokens (default: all `keys`; fewer when cached)."""
    d, inner, mlp = c.token_dim, c.heads * c.dim_head, c.mlp_dim
    kv = _mm(keys if new_kv is None else new_kv, d, 2 * inner)
    lin = kv + _mm(queries, d, inner) + _mm(queries, inner, d) + _mm(queries, d, mlp) + _mm(queries, mlp, d)
    return Flops(linear=lin, attention=2 * _mm(queries, inner, keys))


def encoder_flops(c: WorldModelConfig) -> int:
    """Matmul/conv FLOPs of encoding one frame: the conv stages (4x4, stride 2) and the
    projection, or the ViT's patch embedding and blocks (class token included)."""
    if c.encoder == "conv":
        flops, cin, side = 0, 3, c.image_size
        for cout in c.conv_channels:
            side //= 2
            flops += _mm(side * side, cin * 16, cout)
            cin = cout
        return flops + _mm(c.num_patches, cin, c.encoder_dim)
    n, d = c.num_patches + 1, c.vit_dim
    per_block = _mm(n, d, 3 * d) + 2 * _mm(n, d, n) + _mm(n, d, d) + _mm(n, d, 4 * d) + _mm(n, 4 * d, d)
    return _mm(c.num_patches, 3 * c.vit_patch_size ** 2, d) + c.vit_depth * per_block


def rollout_flops(c: WorldModelConfig, horizon: int, execution: Execution = "cached") -> Flops:
    """FLOPs of one sample's rollout over `horizon` steps (see the module docstring)."""
    if execution not in ("cached", "recompute", "dino_wm"):
        raise ValueError(f"execution {execution!r}: expected 'cached', 'recompute' or 'dino_wm'")
    p, nh, depth = c.tokens_per_frame, c.num_hist, c.depth
    total = Flops(encoder=encoder_flops(c) if execution == "dino_wm" else 0)
    for t in range(horizon):
        window = min(t + 1, nh) * p  # tokens attended to
        if execution == "cached" and t < nh:  # the newest frame against the cache
            total = total + block_flops(c, p, window, new_kv=p) * depth
        elif execution == "dino_wm":  # every block, every token
            total = total + block_flops(c, window, window) * depth
        else:  # the whole window, the last block for the last frame's queries only
            total = total + block_flops(c, window, window) * (depth - 1) + block_flops(c, p, window)
    return total


def rollout_gflop(c: WorldModelConfig, horizon: int) -> float:
    """GFLOPs of one sample's rollout as `WorldModel.rollout` runs it (matmuls only)."""
    return rollout_flops(c, horizon, "cached").total / 1e9


def plan_flops(c: WorldModelConfig, horizon: int, samples: int, iterations: int,
               execution: Execution = "cached") -> Flops:
    """A sampling plan's rollouts: `iterations x samples`, plus the final scoring of the plan."""
    return rollout_flops(c, horizon, execution) * (iterations * samples + 1)
