"""Analytic FLOPs of a LeWorldModel: its one FLOP model, used by admission (`LeWM.rollout_gflop`,
`server.engine.Engine.rollout_gflop`) and by benchmarks.

As `models/flops.py` for the DINO-WM family: matmuls only, 2 FLOPs per
multiply-add, ``mm(m, k, n) = 2 m k n``; norms, activations and the objective
are left out. One predictor block with width ``d``, ``i = heads * dim_head``,
MLP width ``m``, where ``q`` query tokens attend to ``k`` keys of which ``n``
are projected in this call (a token is one frame):

    adaln     = mm(n, d, 6d)                       # every new token's shift/scale/gate
    linear    = mm(n, d, 3i) + mm(q, i, d) + mm(q, d, m) + mm(q, m, d) + adaln
    attention = mm(q, i, k) + mm(q, k, i)

`LeWM.rollout` over ``H`` steps with ``h = num_hist``: while t < h only the
newest frame is computed against the cache (q = n = 1, k = t + 1); once the
window slides it is recomputed (q = n = k = h) except the last block, which
keeps the last frame's queries (q = 1). Every step adds the action embedder
and ``pred_proj`` on one frame. ``"reference"`` counts le-wm's own rollout:
the whole window in every block, pred_proj on every window frame, the
action embedder over the whole sequence so far, and its extra final step is
already the H-th prediction (same count of steps).
"""

from __future__ import annotations

from typing import Literal

from models.flops import Flops, _mm
from models.lewm.config import LeWMConfig

Execution = Literal["cached", "reference"]


def block_flops(c: LeWMConfig, queries: int, keys: int, new: int) -> Flops:
    d, inner, m = c.predictor_dim, c.heads * c.dim_head, c.mlp_dim
    lin = (_mm(new, d, 6 * d) + _mm(new, d, 3 * inner) + _mm(queries, inner, d) + _mm(queries, d, m)
           + _mm(queries, m, d))
    return Flops(linear=lin, attention=2 * _mm(queries, inner, keys))


def mlp_flops(rows: int, dim_in: int, hidden: int, dim_out: int) -> int:
    return _mm(rows, dim_in, hidden) + _mm(rows, hidden, dim_out)


def action_flops(c: LeWMConfig, steps: int) -> int:
    hidden = c.action_mlp_scale * c.embed_dim
    return steps * (_mm(1, c.action_dim, c.action_smoothed_dim) + mlp_flops(1, c.action_smoothed_dim, hidden,
                                                                            c.embed_dim))


def encoder_flops(c: LeWMConfig) -> int:
    """One frame: patch embedding, the ViT blocks (CLS token included) and the projector."""
    n, d = c.num_patches + 1, c.vit_dim
    per_block = _mm(n, d, 3 * d) + 2 * _mm(n, d, n) + _mm(n, d, d) + mlp_flops(n, d, c.vit_mlp_dim, d)
    patch = _mm(c.num_patches, 3 * c.patch_size ** 2, d)
    return patch + c.vit_depth * per_block + mlp_flops(1, d, c.projector_hidden, c.embed_dim)


def rollout_flops(c: LeWMConfig, horizon: int, execution: Execution = "cached") -> Flops:
    """FLOPs of one sample's rollout over `horizon` steps (see the module docstring)."""
    if execution not in ("cached", "reference"):
        raise ValueError(f"execution {execution!r}: expected 'cached' or 'reference'")
    nh, depth = c.num_hist, c.depth
    total = Flops()
    for t in range(horizon):
        window = min(t + 1, nh)
        if execution == "cached":
            if t < nh:
                step = block_flops(c, 1, window, 1) * depth
            else:
                step = block_flops(c, window, window, window) * (depth - 1) + block_flops(c, 1, window, window)
            rows, actions = 1, 1
        else:
            step, rows, actions = block_flops(c, window, window, window) * depth, window, t + 1
        proj = mlp_flops(rows, c.embed_dim, c.pred_proj_hidden, c.embed_dim)
        total = total + step + Flops(linear=proj + action_flops(c, actions))
    return total


def rollout_gflop(c: LeWMConfig, horizon: int) -> float:
    return rollout_flops(c, horizon).total / 1e9
