"""Model-predictive control: the warm start of the next plan.

After the client executes k model steps of a plan, the next plan starts from
the old one shifted by k, its tail filled by repeating the last planned
action. Never zeros: zero in normalised space is "the mean training action",
which would bias the tail towards it. Sigma is reset by the planner (every
`plan` call starts at its solver's initial sigma). iCEM's kept elites shift
the same way. Where the last plan is kept between requests (a server-side
session or a token the client carries) is the caller's business.
"""

from __future__ import annotations

import torch


def warm_start(prev: torch.Tensor, executed: int, horizon: int | None = None) -> torch.Tensor:
    """prev: (..., H, A) previous plan; executed: model steps done since (>= 0).

    Returns (..., horizon, A): prev[executed:] followed by copies of prev's
    last action (also when executed >= H: then every step is that action).
    """
    if executed < 0:
        raise ValueError(f"executed={executed}: must be >= 0")
    h = prev.shape[-2]
    horizon = h if horizon is None else horizon
    kept = prev[..., min(executed, h):, :][..., :horizon, :]
    missing = horizon - kept.shape[-2]
    tail = prev[..., -1:, :].expand(*prev.shape[:-2], missing, prev.shape[-1])
    return torch.cat([kept, tail], dim=-2)
