"""models/flops.py: the one FLOP model, checked against torch's own count and used by the server."""

from __future__ import annotations

import types

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.naive import naive_rollout
from benchmarks.problems import dino_wm_config, random_model, reachable_problem
from models.flops import encoder_flops, plan_flops, rollout_flops, rollout_gflop
from models.testing import TINY_CONFIG, tiny_model
from server.engine import Engine


@pytest.mark.parametrize("cfg", [TINY_CONFIG, dino_wm_config(1)], ids=["conv", "dino-wm"])
def test_analytic_flops_match_torch_flop_counter(cfg):
    """torch counts matmuls and convolutions as executed (not SDPA on CPU, so the cached
    rollout's attention is left out of that comparison; the naive rollout's is manual)."""
    model = random_model(cfg, vit_depth=1)
    prob = reachable_problem(model, 2, 5, seed=0)
    actions = torch.randn(2, 5, cfg.action_dim)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as naive_count:
            naive_rollout(model, prob.pixels, prob.norm_proprio, actions)
        with FlopCounterMode(display=False) as ours_count:
            model.rollout(prob.z_obs, actions)
    naive = rollout_flops(model.config, 5, "dino_wm") * 2
    ours = rollout_flops(model.config, 5, "cached") * 2
    assert naive_count.get_total_flops() == pytest.approx(naive.total, rel=0.02)
    counted = sum(n for op, n in ours_count.get_flop_counts()["Global"].items() if "bmm" not in str(op))
    assert counted == pytest.approx(ours.linear, rel=0.02)
    per_sample = [rollout_flops(model.config, 5, e).total for e in ("cached", "recompute", "dino_wm")]
    assert per_sample == sorted(per_sample) and per_sample[0] < per_sample[2]  # the cache and the window save work
    assert naive.encoder == 2 * encoder_flops(model.config) and ours.encoder == 0


def test_dino_wm_plan_is_about_a_petaflop():
    """DESIGN.md: a DINO-WM-size plan (paper settings, published planner) is about 1.1 PFLOP."""
    assert 1.0e15 < plan_flops(dino_wm_config(14), 5, 300, 30, "dino_wm").total < 1.3e15


def test_the_server_prices_a_rollout_with_the_same_model():
    model = tiny_model()
    engine = types.SimpleNamespace(model=model)  # rollout_gflop reads only the model
    for horizon in (1, 3, 5, 10):
        assert Engine.rollout_gflop(engine, horizon) == rollout_gflop(model.config, horizon)
        assert rollout_gflop(model.config, horizon) == rollout_flops(model.config, horizon).total / 1e9


def test_an_unknown_execution_is_refused():
    with pytest.raises(ValueError, match="execution 'ours'"):
        rollout_flops(TINY_CONFIG, 5, "ours")  # type: ignore[arg-type]
