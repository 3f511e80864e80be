"""Scoring candidate action sequences with chunked rollouts (exact, OOM-safe).

The driver hands every solver one `Evaluator`: it broadcasts the request's
observation and goal latents to that request's candidates, runs the rollout
in chunks of at most `chunk` sequences (derived from a memory budget, halved
and retried on out-of-memory), and returns one loss per candidate. Chunking
never changes a loss, so a seed gives the same plan whatever the chunk size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from models import Latent, WorldModel
from planning.objectives import objective

if TYPE_CHECKING:
    from planning.config import PlannerConfig

log = logging.getLogger(__name__)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


CPU_MEMORY_BUDGET_MB = 1024.0  # a chunk's activations on CPU when the config sets no budget


class Evaluator:
    """Scores action sequences with chunked rollouts; halves the chunk on OOM."""

    def __init__(self, model: WorldModel, z_obs: Latent, z_goal: Latent, cfg: PlannerConfig) -> None:
        self.model, self.z_obs, self.z_goal, self.cfg = model, z_obs, z_goal, cfg
        self.chunk = cfg.chunk_size or self._chunk_from_budget()
        b = z_obs.visual.shape[0]
        # sequences scored per request (on the device: counting costs no host sync), for FLOPs per plan
        self.rollouts = torch.zeros(b, dtype=torch.long, device=z_obs.visual.device)
        self.grad_rollouts = torch.zeros(b, dtype=torch.long, device=z_obs.visual.device)

    def _chunk_from_budget(self) -> int:
        """Samples per forward pass. On CUDA the budget is half the device's free memory
        unless the config sets one (then the smaller of the two): a fixed 1 GB would cut a
        DINO-WM-size iteration into chunks of 9 samples on a GPU with 100+ GB free."""
        if self.model.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.model.device)
            budget = 0.5 * free
            if self.cfg.memory_budget_mb is not None:
                budget = min(budget, self.cfg.memory_budget_mb * 2**20)
        else:
            budget = (self.cfg.memory_budget_mb or CPU_MEMORY_BUDGET_MB) * 2**20
        return max(1, int(budget // self.model.rollout_bytes_per_sample(self.cfg.horizon)))

    def __call__(self, req: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
        """req: (b,) request indices; samples: (b, S, H, A) -> losses (b, S)."""
        b, s, h, a = samples.shape
        flat = samples.reshape(b * s, h, a)
        out = torch.empty(b * s, device=samples.device, dtype=samples.dtype)

        def score(i: int, j: int) -> None:
            z_obs, z_goal = self._latents(self.z_obs, req, i, j, s), self._latents(self.z_goal, req, i, j, s)
            pred = self.model.rollout(z_obs, flat[i:j])
            out[i:j] = objective(pred, z_goal, self.cfg.objective, self.cfg.alpha, self.cfg.base)

        self._chunked(b * s, score)
        self.rollouts.index_add_(0, req, torch.full_like(req, s))
        return out.view(b, s)

    def with_grad(self, req: torch.Tensor, samples: torch.Tensor,
                  rollout: Callable[[Latent, torch.Tensor], Latent]) -> tuple[torch.Tensor, torch.Tensor]:
        """Losses (b, S) and their gradients (b, S, H, A) with respect to `samples`
        (b, S, H, A), through `rollout` (a differentiable one). Only the actions
        take part in autograd (`torch.autograd.grad` on them alone): the model's
        weights never get a `.grad`. Each sequence's loss depends only on its own
        actions, so the gradient of a chunk's summed loss is exact per sequence."""
        b, s, h, a = samples.shape
        flat = samples.reshape(b * s, h, a)
        out = torch.empty(b * s, device=samples.device, dtype=samples.dtype)
        grad = torch.empty(b * s, h, a, device=samples.device, dtype=samples.dtype)

        def score(i: int, j: int) -> None:
            z_obs, z_goal = self._latents(self.z_obs, req, i, j, s), self._latents(self.z_goal, req, i, j, s)
            with torch.inference_mode(False), torch.enable_grad():
                # clones: tensors made under inference mode cannot enter autograd
                acts = flat[i:j].clone().requires_grad_(True)
                z0 = Latent(z_obs.visual.clone(), z_obs.proprio.clone())
                zg = Latent(z_goal.visual.clone(), z_goal.proprio.clone())
                loss = objective(rollout(z0, acts), zg, self.cfg.objective, self.cfg.alpha, self.cfg.base)
                (g,) = torch.autograd.grad(loss.sum(), acts)
            out[i:j] = loss.detach()
            grad[i:j] = g

        self._chunked(b * s, score, grad_factor=3)
        self.grad_rollouts.index_add_(0, req, torch.full_like(req, s))
        return out.view(b, s), grad.view(b, s, h, a)

    def _chunked(self, n: int, score: Callable[[int, int], None], grad_factor: int = 1) -> None:
        """Calls score(i, j) over 0..n in chunks; a backward pass keeps about
        `grad_factor` times the activations, so its chunks are that much smaller."""
        i = 0
        while i < n:
            chunk = max(1, self.chunk // grad_factor)
            j = min(n, i + chunk)
            try:
                score(i, j)
            except (RuntimeError, torch.OutOfMemoryError) as exc:
                if not _is_oom(exc) or chunk == 1:
                    raise
                self.chunk = max(1, self.chunk // 2)
                log.warning("out of memory at chunk %d; retrying with %d", chunk, max(1, self.chunk // grad_factor))
                continue
            i = j

    @staticmethod
    def _latents(z: Latent, req: torch.Tensor, i: int, j: int, s: int) -> Latent:
        """Latents of flat samples i..j-1 (S per request): a broadcast view when they
        all belong to one request (no copy of the latent per sample), else a gather."""
        first, last = i // s, (j - 1) // s
        if first == last:
            one = z.index(req[first:first + 1])  # (1, ...)
            return Latent(one.visual.expand(j - i, *one.visual.shape[1:]), one.proprio.expand(j - i, -1))
        return z.index(req[first:last + 1].repeat_interleave(s)[i - first * s:j - first * s])
