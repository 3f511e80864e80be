"""Gradient refinement: Adam on the action sequence through the frozen world model.

The loss of a sequence is differentiable in its actions (the rollout is a
chain of predictor calls), so instead of sampling, each iteration takes one
Adam step on `starts` sequences per request: the warm start and
perturbed copies (sigma * N(0, 1), from the request's seed). The returned
plan is the lowest-cost sequence ever scored, so refinement never returns
worse than its start. DINO-WM ships such a planner (`GDPlanner`); the
composite methods (`planning.composite`) start it from CEM's or iCEM's plan.

Only the actions take part in autograd; the model's weights never get a
`.grad` (`Evaluator.with_grad`). The model's own `rollout` writes into
preallocated buffers and a key/value cache in place, which autograd cannot
follow, so this file rolls out with plain predictor calls over each step's
window (more FLOPs than the cached rollout; the benchmark counts them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch

from models import Latent, WorldModel
from planning.evaluate import Evaluator
from planning.settings import Settings, setting
from planning.solver import Bounds, Solver, draw_normal

if TYPE_CHECKING:
    from planning.config import PlannerConfig

_BETAS, _EPS = (0.9, 0.999), 1e-8  # Adam's defaults (Kingma & Ba, 2015)
STEP_ROLLOUTS = 4.0  # one gradient step on a sequence, in cached forward rollouts (uncached forward + backward)


@dataclass(frozen=True)
class GradientSettings(Settings):
    """Gradient refinement's settings (``planner.gradient``); the composite methods use them too."""

    section = "gradient"
    lr: float = setting(0.1, "Adam step size on normalised actions (1 = the training std)", gt=0, limit=100.0,
                        legacy="grad_lr")
    starts: int = setting(4, "sequences refined in parallel: the warm start and starts - 1 perturbed copies; "
                          "the best is returned", ge=1, limit="max_num_samples", legacy="grad_starts")
    sigma: float = setting(1.0, "standard deviation of the perturbed starts in normalised action space", gt=0,
                           limit="max_var_scale", legacy="var_scale")


def differentiable_rollout(model: WorldModel, z0: Latent, actions: torch.Tensor) -> Latent:
    """As `model.rollout` (same shapes, equal to float tolerance), built from
    out-of-place ops so that gradients reach `actions`.
    z0: Latent (B, P, Dv), (B, Ep); actions: (B, H, A) -> Latent (B, H, P, Dv), (B, H, Ep)."""
    c = model.config
    h = actions.shape[1]
    a_emb = model.action_encoder(actions)  # (B, H, Ea)
    frames = [model.tokens(z0, a_emb[:, 0])]  # each (B, p, D): frame t with action t
    visual, proprio = [], []
    for t in range(h):
        window = torch.cat(frames[max(0, t + 1 - c.num_hist):], dim=1)  # (B, n*p, D)
        nxt = model.predictor(window, last_only=True)  # (B, p, D): frame t+1
        z = model.split(nxt)
        visual.append(z.visual)
        proprio.append(z.proprio)
        if t + 1 < h:
            frames.append(_with_action(model, nxt, a_emb[:, t + 1]))
    return Latent(torch.stack(visual, dim=1), torch.stack(proprio, dim=1))


def _with_action(model: WorldModel, tokens: torch.Tensor, action_emb: torch.Tensor) -> torch.Tensor:
    """Out-of-place `WorldModel._set_action`: (B, p, D) with its action part replaced by (B, Ea)."""
    if model.config.concat_mode == "feature":
        ea = action_emb.shape[-1]
        tiled = action_emb.unsqueeze(-2).expand(*tokens.shape[:-1], ea)
        return torch.cat([tokens[..., :-ea], tiled], dim=-1)
    return torch.cat([tokens[..., :-1, :], action_emb.unsqueeze(-2)], dim=-2)


def _rollout_of(model: WorldModel) -> Callable[[Latent, torch.Tensor], Latent]:
    """A model may bring its own differentiable rollout (e.g. one that is already out of place)."""
    own = getattr(model, "differentiable_rollout", None)
    return own if own is not None else partial(differentiable_rollout, model)


class Gradient(Solver):
    """State: x (B, G, H, A) the sequences; Adam's m, v (B, G, H, A) and step count;
    best (B, H, A) and best_cost (B,) over every sequence scored."""

    name = "gradient"
    settings_type = GradientSettings
    cost_settings = ("starts",)

    def __init__(self, config: PlannerConfig, mean: torch.Tensor, seeds: list[int], bounds: Bounds,
                 init_elites: torch.Tensor | None = None, spread: torch.Tensor | float | None = None) -> None:
        super().__init__(config, mean, seeds, bounds)
        self.s = config.solver(self.name)
        b, h, a = mean.shape
        g = self.s.starts
        spread = self.s.sigma if spread is None else spread
        spread = torch.as_tensor(spread, device=mean.device).expand(b, h, a)
        noise = draw_normal([s ^ 0x5EED for s in seeds], (g, h, a), mean.device)  # other draws than CEM's
        noise[:, 0] = 0.0  # start 0 is the warm start itself
        self.x = self.clip(mean[:, None] + spread[:, None] * noise)
        self.m, self.v = torch.zeros_like(self.x), torch.zeros_like(self.x)
        self.t = torch.zeros(b, device=mean.device)
        self.best = mean.clone()
        self.best_cost = torch.full((b,), float("inf"), device=mean.device)
        self.spread = spread

    @classmethod
    def rollouts(cls, config: PlannerConfig, iterations: int) -> float:
        return config.solver(cls.name).starts * iterations * STEP_ROLLOUTS

    def propose(self, idx: torch.Tensor, it: int) -> torch.Tensor:
        return self.x[idx]

    def update(self, idx: torch.Tensor, it: int, candidates: torch.Tensor, costs: torch.Tensor) -> None:
        cost, arg = costs.min(dim=1)  # (b,)
        better = cost < self.best_cost[idx]
        chosen = candidates.gather(1, arg[:, None, None, None].expand(-1, 1, *candidates.shape[2:]))[:, 0]
        self.best[idx] = torch.where(better[:, None, None], chosen, self.best[idx])
        self.best_cost[idx] = torch.minimum(cost, self.best_cost[idx])

    def step(self, idx: torch.Tensor, it: int, evaluate: Evaluator) -> torch.Tensor:
        x = self.x[idx]  # (b, G, H, A)
        costs, grad = evaluate.with_grad(idx, x, _rollout_of(evaluate.model))
        self.update(idx, it, x, costs)
        b1, b2 = _BETAS
        t = self.t[idx] + 1  # (b,)
        m = b1 * self.m[idx] + (1 - b1) * grad
        v = b2 * self.v[idx] + (1 - b2) * grad.square()
        m_hat = m / (1 - b1 ** t)[:, None, None, None]
        v_hat = v / (1 - b2 ** t)[:, None, None, None]
        self.x[idx] = self.clip(x - self.s.lr * m_hat / (v_hat.sqrt() + _EPS))
        self.m[idx], self.v[idx], self.t[idx] = m, v, t
        return costs

    def result(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.best[ids], self.spread[ids]
