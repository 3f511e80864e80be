import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from models.testing import tiny_model
from planning import PlannerConfig, plan
from planning.driver import _converged
from tests.planning.toy import LinearToyModel

SMALL = PlannerConfig(horizon=3, min_iterations=6, max_iterations=6).with_every(samples=40, elites=5)
GOLDEN = Path(__file__).with_name("golden_cem.json")


def tiny_problem(b=2, seed=0):
    model = tiny_model(seed=seed)
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (b, 32, 32, 3), dtype=torch.uint8, generator=g)
    goal = torch.randint(0, 256, (b, 32, 32, 3), dtype=torch.uint8, generator=g)
    prop = torch.randn(b, 2, generator=g)
    return model, model.encode_observation(obs, prop), model.encode_observation(goal, prop + 1)


def test_cem_finds_the_analytic_optimum_of_linear_dynamics():
    toy = LinearToyModel(action_dim=2)
    z0 = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    goal = torch.tensor([[1.5, -0.5], [0.0, 0.5]])
    cfg = PlannerConfig(horizon=1, min_improvement=0.0, max_iterations=30).with_every(samples=300, elites=30, min_sigma=0.0)
    res = plan(toy, toy.latent(z0), toy.latent(goal), cfg, seeds=[0, 1])
    optimum = torch.linalg.solve(toy.M, (goal - z0).T).T  # a* = M^-1 (g - z0)
    for i, r in enumerate(res):
        torch.testing.assert_close(r.actions[0], optimum[i], atol=2e-3, rtol=0)
        assert r.loss < 1e-5


def test_chunked_and_unchunked_plans_are_identical_for_a_seed():
    model, z, g = tiny_problem()
    whole = plan(model, z, g, replace(SMALL, chunk_size=10_000), seeds=[7, 8])
    chunked = plan(model, z, g, replace(SMALL, chunk_size=7), seeds=[7, 8])  # 7 does not divide 80
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a.actions, b.actions, rtol=1e-5, atol=1e-6)
        assert a.loss_trace == pytest.approx(b.loss_trace, rel=1e-5)


def test_out_of_memory_halves_the_chunk_and_retries(monkeypatch):
    model, z, g = tiny_problem(b=1)
    real, seen = model.rollout, []

    def flaky(z0, actions):
        seen.append(actions.shape[0])
        if actions.shape[0] > 10:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(z0, actions)

    monkeypatch.setattr(model, "rollout", flaky)
    res = plan(model, z, g, replace(SMALL, chunk_size=40), seeds=[3])
    assert seen[:3] == [40, 20, 10] and max(seen[3:]) <= 10  # halved twice, then kept
    monkeypatch.setattr(model, "rollout", real)
    ref = plan(model, z, g, replace(SMALL, chunk_size=40), seeds=[3])
    torch.testing.assert_close(res[0].actions, ref[0].actions)


def test_same_seed_same_plan_other_seed_other_plan_independent_of_batch():
    model, z, g = tiny_problem(b=2)
    a = plan(model, z, g, SMALL, seeds=[11, 12])
    b = plan(model, z, g, SMALL, seeds=[11, 12])
    c = plan(model, z, g, SMALL, seeds=[13, 12])
    alone = plan(model, z.index(slice(1, 2)), g.index(slice(1, 2)), SMALL, seeds=[12])
    torch.testing.assert_close(a[0].actions, b[0].actions, rtol=0, atol=0)
    assert not torch.allclose(a[0].actions, c[0].actions)
    torch.testing.assert_close(a[1].actions, alone[0].actions, rtol=1e-5, atol=1e-6)


def test_early_stop_rule_fires_on_plateau_not_on_steady_improvement():
    cfg = PlannerConfig(min_iterations=3, patience=3, min_improvement=1e-2)
    assert _converged([5.0, 2.0, 1.0, 1.0, 0.999, 0.999], cfg)
    assert not _converged([5.0 * 0.9**i for i in range(30)], cfg)  # 10 % per iteration
    assert not _converged([1.0, 1.0, 1.0], cfg)  # too early: patience + 1 points needed


def test_planner_stops_early_on_a_plateau_and_reports_it():
    toy = LinearToyModel(action_dim=2)
    z0, goal = torch.zeros(1, 2), torch.tensor([[0.5, 0.5]])
    cfg = PlannerConfig(horizon=2, min_iterations=5, patience=5, min_improvement=1e-3, max_iterations=100).with_every(samples=200, elites=20)
    (res,) = plan(toy, toy.latent(z0), toy.latent(goal), cfg, seeds=[0])
    assert res.stop_reason == "converged"
    assert 5 <= res.iterations < 100
    assert len(res.loss_trace) == res.iterations
    assert res.loss_trace[-1] <= res.loss_trace[0]


def test_deadline_is_respected():
    model, z, g = tiny_problem(b=1)
    cfg = PlannerConfig(horizon=5, min_improvement=0.0, max_iterations=10_000).with_every(samples=300, elites=30)
    t0 = time.monotonic()
    (res,) = plan(model, z, g, cfg, seeds=[0], deadline=t0 + 0.3)
    elapsed = time.monotonic() - t0
    per_iter = elapsed / max(res.iterations, 1)
    assert res.stop_reason == "deadline"
    assert 1 <= res.iterations < 10_000
    assert elapsed < 0.3 + 3 * per_iter + 0.1  # the final scoring of the plan costs ~1/300 iteration


def test_topk_one_and_bad_sizes():
    model, z, g = tiny_problem(b=1)
    (res,) = plan(model, z, g, SMALL.with_every(elites=1), seeds=[0])
    assert torch.isfinite(res.actions).all() and torch.isfinite(res.sigma).all()
    assert (res.sigma >= SMALL.solver().min_sigma).all()
    with pytest.raises(ValueError, match="cem.elites=50 exceeds cem.samples=40"):
        SMALL.with_every(elites=50)
    with pytest.raises(ValueError, match="horizon=0"):
        PlannerConfig(horizon=0)


def test_samples_respect_action_bounds():
    model = tiny_model(action_low=(-0.5, -0.5), action_high=(0.5, 1.0))
    z = model.encode_observation(torch.zeros(1, 32, 32, 3, dtype=torch.uint8), torch.zeros(1, 2))
    g = model.encode_observation(torch.full((1, 32, 32, 3), 255, dtype=torch.uint8), torch.ones(1, 2))
    (res,) = plan(model, z, g, SMALL.with_every(sigma=5.0), seeds=[0])
    env = model.codec.to_env(res.actions)
    assert (env[:, 0] >= -0.5 - 1e-5).all() and (env[:, 0] <= 0.5 + 1e-5).all()
    assert (env[:, 1] >= -0.5 - 1e-5).all() and (env[:, 1] <= 1.0 + 1e-5).all()


def test_loss_reported_is_the_returned_plans_own_objective():
    model, z, g = tiny_problem(b=1)
    (res,) = plan(model, z, g, SMALL, seeds=[0])
    from planning import objective
    pred = model.rollout(z, res.actions[None])
    assert res.loss == pytest.approx(objective(pred, g, "last", SMALL.alpha).item(), rel=1e-5)


def golden_run():
    model, z, g = tiny_problem(b=2, seed=4)
    cfg = PlannerConfig(horizon=3, objective="all", min_iterations=5, max_iterations=5).with_every(samples=32, elites=4)
    res = plan(model, z, g, cfg, seeds=[2024, 7])
    return {"actions": [r.actions.tolist() for r in res], "loss_trace": [r.loss_trace for r in res]}


def test_seeded_cem_matches_golden_output():
    """Regenerate after an intended change: python -m tests.planning.test_cem"""
    expected = json.loads(GOLDEN.read_text())
    got = golden_run()
    torch.testing.assert_close(torch.tensor(got["actions"]), torch.tensor(expected["actions"]), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.tensor(got["loss_trace"]), torch.tensor(expected["loss_trace"]), rtol=1e-4, atol=1e-6)


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(golden_run(), indent=1))
    print(f"wrote {GOLDEN}")


def test_for_model_applies_the_artifact_recommendation_on_the_device_preset():
    model = tiny_model()
    model.metadata = {"planner": {"objective": "all", "alpha": 10.0}}
    cpu, gpu = PlannerConfig.for_model(model, "cpu"), PlannerConfig.for_model(model, "cuda")
    assert (cpu.objective, cpu.alpha, cpu.solver().samples) == ("all", 10.0, PlannerConfig.cpu_preset().solver().samples)
    assert (gpu.objective, gpu.solver().samples) == ("all", PlannerConfig.paper().solver().samples)
    model.metadata = {"planner": {"samples": 3}}
    with pytest.raises(ValueError, match="model metadata 'planner': samples: not a planner setting"):
        PlannerConfig.for_model(model)


def test_per_request_deadlines_stop_only_their_request():
    model, z, g = tiny_problem(b=2)
    past = time.monotonic() - 1.0
    late, free = plan(model, z, g, SMALL, seeds=[7, 8], deadline=[past, None])
    (alone,) = plan(model, z.index(slice(1, 2)), g.index(slice(1, 2)), SMALL, seeds=[8])
    assert (late.stop_reason, late.iterations) == ("deadline", 1)  # one iteration always runs
    assert free.stop_reason != "deadline"
    torch.testing.assert_close(free.actions, alone.actions, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="deadlines for 2 requests"):
        plan(model, z, g, SMALL, seeds=[7, 8], deadline=[past])
