"""Inference options (models/inference.py) checked against fp32 on this CPU, on the
shipped default model and wall-environment problems (trained weights: elite sets
and losses mean something).

Tolerances, from `python -m benchmarks.studies.precision` (docs/gpu.md): on wall problems bf16
autocast kept 90-100 % of the fp32 top-10 elites of the same 100 samples, changed the
samples' losses by about 1 % (median; at most 1.3 % for one problem), the fp32 plan's
loss by at most 4.4 %, and plans made in bf16 scored within 3.4 % of the fp32 plans'
loss under the fp32 model. The bounds below leave room for other seeds: elite overlap
>= 0.8 per problem, a plan's loss within 10 % + 2e-3 (absolute, for losses near 0).
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from benchmarks.problems import wall_problem
from models import InferenceConfig, load_model, save_model
from models.testing import tiny_model
from planning import PlannerConfig, objective, plan

ELITE_OVERLAP = 0.8
LOSS_RTOL, LOSS_ATOL = 0.10, 2e-3


@pytest.fixture(scope="module")
def fp32(test_device):
    return load_model(None, device=test_device)


@pytest.fixture(scope="module")
def problems(fp32):
    return wall_problem(fp32, 2, seed=0)  # frames and proprio stay on the host, latents on the device


def _losses(model, cem, z, g, actions):
    n = actions.shape[0]
    rep = torch.zeros(n, dtype=torch.long)
    return objective(model.rollout(z.index(rep), actions), g.index(rep), cem.objective, cem.alpha, cem.base)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@torch.inference_mode()
def test_reduced_precision_keeps_the_elites_and_the_loss_of_a_plan(fp32, problems, dtype, test_device):
    reduced = load_model(None, device=test_device, dtype=dtype)
    assert reduced.describe()["inference"]["dtype"] == dtype
    assert next(reduced.parameters()).dtype == torch.float32  # autocast: weights stay fp32
    cem = PlannerConfig.for_model(fp32, "cpu")
    lo, hi = fp32.codec.model_bounds(fp32.config.action_low, fp32.config.action_high)
    for i in range(problems.batch):
        z, g = problems.z_obs.index(slice(i, i + 1)), problems.z_goal.index(slice(i, i + 1))
        samples = torch.randn(cem.solver().samples, cem.horizon, fp32.config.action_dim,
                              generator=torch.Generator().manual_seed(i)).clamp(lo, hi).to(test_device)
        l32, low = _losses(fp32, cem, z, g, samples), _losses(reduced, cem, z, g, samples)
        assert low.dtype == torch.float32
        elites32 = set(l32.topk(cem.solver().elites, largest=False).indices.tolist())
        elites = set(low.topk(cem.solver().elites, largest=False).indices.tolist())
        assert len(elites32 & elites) / cem.solver().elites >= ELITE_OVERLAP, (i, elites32, elites)
    if dtype != "bf16":
        return  # fp16 plans: benchmarks/studies/precision.py (reduced precision is emulated, slowly, on this CPU)
    # the same plan scored by both models; a plan made in bf16 scored in fp32
    cem = dataclasses.replace(cem, max_iterations=6)
    z, g = problems.z_obs.index(slice(0, 1)), problems.z_goal.index(slice(0, 1))
    (p32,) = plan(fp32, z, g, cem, seeds=[0])
    (plow,) = plan(reduced, z, g, cem, seeds=[0])
    same_plan = float(_losses(reduced, cem, z, g, p32.actions[None]))
    assert same_plan == pytest.approx(p32.loss, rel=LOSS_RTOL, abs=LOSS_ATOL)
    assert float(_losses(fp32, cem, z, g, plow.actions[None])) <= p32.loss * (1 + LOSS_RTOL) + LOSS_ATOL


@torch.inference_mode()
def test_cast_strategy_converts_weights_and_still_returns_fp32(fp32, problems, tmp_path, test_device):
    cast = load_model(None, device=test_device, inference=InferenceConfig(dtype="bf16", strategy="cast"))
    assert next(cast.parameters()).dtype == torch.bfloat16
    z = cast.encode_observation(problems.frames[:1], problems.proprio[:1])
    assert z.visual.dtype == torch.float32
    torch.testing.assert_close(z.visual, problems.z_obs.visual[:1], rtol=0.05, atol=0.05)
    out = cast.rollout(z, torch.zeros(1, 3, cast.config.action_dim, device=test_device))
    assert out.visual.dtype == torch.float32 and torch.isfinite(out.visual).all()
    # saved weights are fp32 whatever the model computes in
    reloaded = load_model(save_model(cast, tmp_path / "m.pt"))
    assert next(reloaded.parameters()).dtype == torch.float32


@torch.inference_mode()
def test_compiled_rollout_gives_the_eager_plan(test_device):
    # the "eager" backend runs Dynamo's graph capture without generating kernels: the
    # compiled path (dynamic batch, both rollout branches) in seconds on the tiny model;
    # inductor takes minutes on this CPU and is measured in benchmarks/studies/precision.py
    eager = tiny_model(seed=4).to(test_device)
    compiled = tiny_model(seed=4).to(test_device).configure_inference(
        InferenceConfig(compile=True, compile_backend="eager", compile_horizons=(4,)))
    assert compiled.describe()["inference"]["compiled"]
    frames = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    z = eager.encode_observation(frames, torch.zeros(2, 2))
    cem = PlannerConfig(horizon=4, min_iterations=3, chunk_size=8, max_iterations=3).with_every(samples=30, elites=5)
    (want,) = plan(eager, z.index(slice(0, 1)), z.index(slice(1, 2)), cem, seeds=[3])
    (got,) = plan(compiled, z.index(slice(0, 1)), z.index(slice(1, 2)), cem, seeds=[3])
    torch.testing.assert_close(got.actions, want.actions, rtol=1e-4, atol=1e-4)
    assert got.loss == pytest.approx(want.loss, rel=1e-4)


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    model = tiny_model()
    with caplog.at_level(logging.WARNING, logger="models.world_model"):
        model.configure_inference(compile=True)
    assert "running eagerly" in caplog.text and "no compiler here" in caplog.text
    assert not model.describe()["inference"]["compiled"]
    with torch.inference_mode():
        z = model.encode_observation(torch.zeros(1, 32, 32, 3, dtype=torch.uint8), torch.zeros(1, 2))
        assert torch.isfinite(model.rollout(z, torch.zeros(1, 4, model.config.action_dim)).visual).all()


def test_a_compiled_rollout_that_fails_later_runs_eagerly(caplog):
    model, eager = tiny_model(), tiny_model()

    def fails(*args):
        raise RuntimeError("graph break in a later shape")

    model._compiled_rollout = fails
    with torch.inference_mode(), caplog.at_level(logging.WARNING, logger="models.world_model"):
        z = eager.encode_observation(torch.zeros(2, 32, 32, 3, dtype=torch.uint8), torch.zeros(2, 2))
        a = torch.randn(2, 4, model.config.action_dim)
        torch.testing.assert_close(model.rollout(z, a).visual, eager.rollout(z, a).visual)
    assert "running eagerly from now on" in caplog.text and model._compiled_rollout is None


@pytest.mark.parametrize("options, message", [
    ({"dtype": "int8"}, "dtype='int8'"),
    ({"dtype": "bf16", "strategy": "quantise"}, "strategy='quantise'"),
    ({"compile": "yes"}, "compile='yes'"),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        InferenceConfig(**options)


@torch.inference_mode()
def test_host_frames_reach_the_models_device_and_plans_are_exact_there(fp32, problems, test_device):
    """On CUDA: frames go through pinned memory (non-blocking); the plan for a seed is the
    same twice and whatever the chunk size (noise drawn before chunking) on the device."""
    z = fp32.encode_observation(problems.frames[:1], problems.proprio[:1])  # host uint8 frames
    assert z.visual.device.type == test_device.type
    torch.testing.assert_close(z.visual, problems.z_obs.visual[:1])
    g = problems.z_goal.index(slice(0, 1))
    cem = dataclasses.replace(PlannerConfig.for_model(fp32, test_device.type), max_iterations=3).with_every(samples=40, elites=5)
    (a,) = plan(fp32, z, g, cem, seeds=[7])
    (b,) = plan(fp32, z, g, dataclasses.replace(cem, chunk_size=7), seeds=[7])
    (c,) = plan(fp32, z, g, cem, seeds=[7])
    torch.testing.assert_close(a.actions, b.actions, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.actions, c.actions, rtol=0, atol=0)
    assert a.actions.device.type == test_device.type
