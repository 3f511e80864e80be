"""A naive reference planner, executed the way DINO-WM's published planner is.

DINO-WM (`planning/cem.py`, `models/visual_world_model.py`, `models/vit.py`)
plans like this, and so does `naive_plan`:

* a Python loop over requests inside the loop over iterations;
* the observation *image* repeated for every sample and re-encoded by the
  image encoder in every iteration (`wm.rollout(obs_0=repeat(obs, n=S))`);
* the rollout grows its frame sequence with `torch.cat` and runs the full
  predictor on the last `num_hist` frames at every step, keeping only the
  last frame's output;
* attention written out in fp32: `q @ k^T * scale`, `masked_fill(-inf)`,
  softmax, `@ v`, materialising every (B, heads, T, T) matrix;
* `argsort` of the losses and `.item()` of the best loss per request per
  iteration; no early stopping.

What is *not* DINO-WM's: the CEM arithmetic. The noise is drawn per request
from the request's seed exactly as `planning.plan` draws it, sample 0 is the
mean, sigma is the biased std floored at `min_std` and samples are clamped to
the action bounds, so that for the same seed and without early stopping both
planners evaluate the same samples and return the same plan. The speed
difference is then execution alone, and plan quality can be compared 1:1.
It runs on the same `WorldModel` weights as the real planner.
"""

from __future__ import annotations

import math

import torch

from models import Latent, WorldModel
from models.predictor import Attention, Predictor
from planning import PlannerConfig, PlanResult
from planning.objectives import objective


def manual_attention(attn: Attention, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """DINO-WM's `Attention.forward`: x (B, T, dim), mask (T, T) bool -> (B, T, dim)."""
    b, t, _ = x.shape
    h = attn.norm(x)
    q, k, v = attn.to_qkv(h).chunk(3, dim=-1)
    q, k, v = (z.reshape(b, t, attn.heads, attn.dim_head).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hs)
    dots = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(attn.dim_head))  # (B, nh, T, T)
    if mask is not None:
        dots = dots.masked_fill(~mask, float("-inf"))
    out = torch.matmul(dots.softmax(dim=-1), v)  # (B, nh, T, hs)
    return attn.to_out(out.transpose(1, 2).reshape(b, t, attn.heads * attn.dim_head))


def full_predictor(pred: Predictor, x: torch.Tensor, attention: str = "manual") -> torch.Tensor:
    """Every block over every token: x (B, n*p, dim) -> (B, n*p, dim).
    attention: "manual" (DINO-WM) or "sdpa" (torch's fused kernel; a ladder rung)."""
    t = x.shape[1]
    x = x + pred.pos_embedding[:, :t]
    mask = pred.mask[:t, :t]
    for block in pred.blocks:
        if attention == "manual":
            x = x + manual_attention(block.attn, x, mask)
            x = x + block.ff(x)
        else:
            x = block(x, mask)
    return pred.norm(x)


def naive_rollout(model: WorldModel, pixels: torch.Tensor, proprio: torch.Tensor | None, actions: torch.Tensor,
                  attention: str = "manual", z0: Latent | None = None) -> Latent:
    """DINO-WM's `rollout`: encode the (repeated) image, then grow the sequence.

    pixels: (N, 3, S, S) normalised, one per sample; proprio: (N, proprio_dim)
    normalised; actions: (N, H, action_dim). z0: skip the encoder and use this
    latent (a ladder rung: "encode once"). Returns Latent (N, H, P, Dv), (N, H, Ep).
    """
    z = model.encode(pixels, proprio) if z0 is None else z0
    a_emb = model.action_encoder(actions)  # (N, H, Ea)
    seq = model.tokens(z, a_emb[:, 0]).unsqueeze(1)  # (N, 1, p, D)
    visual, prop = [], []
    for t in range(actions.shape[1]):
        window = seq[:, -model.config.num_hist:]  # (N, n, p, D)
        n, f, p, d = window.shape
        out = full_predictor(model.predictor, window.reshape(n, f * p, d), attention).view(n, f, p, d)[:, -1]
        pred = model.split(out)
        visual.append(pred.visual)
        prop.append(pred.proprio)
        if t + 1 < actions.shape[1]:
            nxt = out.clone()
            model._set_action(nxt, a_emb[:, t + 1])
            seq = torch.cat([seq, nxt.unsqueeze(1)], dim=1)  # grows: (N, t+2, p, D)
    return Latent(torch.stack(visual, 1), torch.stack(prop, 1))


def naive_plan(model: WorldModel, pixels: torch.Tensor, proprio: torch.Tensor | None, z_goal: Latent,
               cfg: PlannerConfig, seeds: list[int], init_mean: torch.Tensor | None = None) -> list[PlanResult]:
    """pixels: (B, 3, S, S) normalised observation images; proprio: (B, proprio_dim)
    normalised; z_goal: Latent (B, ...). Runs all `cfg.max_iterations` iterations."""
    b = pixels.shape[0]
    cem = cfg.solver("cem")
    h, s, a = cfg.horizon, cem.samples, model.config.action_dim
    bounds = None
    if model.config.action_low is not None:
        bounds = model.codec.model_bounds(model.config.action_low, model.config.action_high)
    with torch.inference_mode():
        mu = torch.zeros(b, h, a) if init_mean is None else init_mean.float().clone()
        if bounds is not None:
            mu = mu.clamp(*bounds)
        sigma = torch.full((b, h, a), cem.sigma)
        noise = []
        for seed in seeds:  # the same draw as planning.plan: one generator per request, all iterations
            eps = torch.randn((cfg.max_iterations, s, h, a), generator=torch.Generator().manual_seed(seed))
            eps[:, 0] = 0.0
            noise.append(eps)
        traces: list[list[float]] = [[] for _ in range(b)]
        for it in range(cfg.max_iterations):
            for r in range(b):
                obs = pixels[r:r + 1].repeat(s, 1, 1, 1)  # (S, 3, H, W): the image, once per sample
                prop = None if proprio is None else proprio[r:r + 1].repeat(s, 1)
                goal = Latent(z_goal.visual[r:r + 1].repeat(s, 1, 1), z_goal.proprio[r:r + 1].repeat(s, 1))
                actions = mu[r] + sigma[r] * noise[r][it]  # (S, H, A); sample 0 = mu
                if bounds is not None:
                    actions = actions.clamp(*bounds)
                pred = naive_rollout(model, obs, prop, actions)
                loss = objective(pred, goal, cfg.objective, cfg.alpha, cfg.base)  # (S,)
                order = torch.argsort(loss)[:cem.elites]
                elites = actions[order]
                mu[r] = elites.mean(dim=0)
                sigma[r] = elites.std(dim=0, unbiased=False).clamp_min(cem.min_sigma)
                traces[r].append(loss[order[0]].item())
        results = []
        for r in range(b):
            goal = Latent(z_goal.visual[r:r + 1], z_goal.proprio[r:r + 1])
            prop = None if proprio is None else proprio[r:r + 1]
            pred = naive_rollout(model, pixels[r:r + 1], prop, mu[r:r + 1])
            final = objective(pred, goal, cfg.objective, cfg.alpha, cfg.base).item()
            results.append(PlanResult(actions=mu[r].clone(), sigma=sigma[r].clone(), loss=final,
                                      loss_trace=traces[r], iterations=cfg.max_iterations, seed=seeds[r]))
    return results
