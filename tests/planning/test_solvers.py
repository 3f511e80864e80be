"""Every solver behind the one driver: seeds, chunking, bounds, tiny populations, and what each adds."""

from dataclasses import replace

import pytest
import torch

from models.testing import tiny_model
from planning import PlannerConfig, plan, warm_start
from planning.registry import SOLVERS
from planning.gradient import differentiable_rollout
from planning.icem import colored, population
from tests.planning.test_cem import SMALL, tiny_problem
from tests.planning.toy import LinearToyModel

FAST = replace(SMALL, min_iterations=5, max_iterations=5).with_every(samples=16, elites=4, starts=2, gradient_iterations=2)


def cfg_for(method, **kw):
    """FAST for `method`; driver settings by name, solver settings in every section that has them."""
    driver = {k: v for k, v in kw.items() if k in PlannerConfig.__dataclass_fields__}
    cfg = replace(FAST, method=method, **driver)
    return cfg.with_every(**{k: v for k, v in kw.items() if k not in driver})


METHODS = tuple(SOLVERS)


@pytest.mark.parametrize("method", METHODS)
def test_seeded_plans_are_reproducible_chunk_independent_and_batch_independent(method):
    model, z, g = tiny_problem(b=2)
    whole = plan(model, z, g, cfg_for(method, chunk_size=10_000), seeds=[7, 8])
    chunked = plan(model, z, g, cfg_for(method, chunk_size=7), seeds=[7, 8])
    (alone,) = plan(model, z.index(slice(1, 2)), g.index(slice(1, 2)), cfg_for(method), seeds=[8])
    other = plan(model, z, g, cfg_for(method), seeds=[9, 8])
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a.actions, b.actions, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(whole[1].actions, alone.actions, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(whole[0].actions, other[0].actions)
    for r in whole:
        assert r.method == method and r.iterations == FAST.max_iterations and len(r.loss_trace) == r.iterations
        assert r.rollouts + r.grad_rollouts > 0


@pytest.mark.parametrize("method", METHODS)
def test_plans_respect_bounds_and_tiny_populations_stay_finite(method):
    model = tiny_model(action_low=(-0.5, -0.5), action_high=(0.5, 1.0))
    z = model.encode_observation(torch.zeros(1, 32, 32, 3, dtype=torch.uint8), torch.zeros(1, 2))
    g = model.encode_observation(torch.full((1, 32, 32, 3), 255, dtype=torch.uint8), torch.ones(1, 2))
    for cfg in (cfg_for(method, sigma=5.0, lr=5.0),
                cfg_for(method, samples=2, elites=1, starts=1, max_iterations=4, min_iterations=4)):
        (res,) = plan(model, z, g, cfg, seeds=[0])
        env = model.codec.to_env(res.actions)
        assert torch.isfinite(res.actions).all() and torch.isfinite(torch.tensor(res.loss))
        assert (env[:, 0] >= -0.5 - 1e-5).all() and (env[:, 0] <= 0.5 + 1e-5).all()
        assert (env[:, 1] >= -0.5 - 1e-5).all() and (env[:, 1] <= 1.0 + 1e-5).all()


@pytest.mark.parametrize("method", METHODS)
def test_every_method_approaches_the_analytic_optimum_of_linear_dynamics(method):
    toy = LinearToyModel(action_dim=2)
    z0, goal = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.5, -0.5]])
    cfg = PlannerConfig(method=method, horizon=1, min_improvement=0.0, max_iterations=30).with_every(samples=100, elites=10, lr=0.2, gradient_iterations=15)
    (res,) = plan(toy, toy.latent(z0), toy.latent(goal), cfg, seeds=[0])
    optimum = torch.linalg.solve(toy.M, (goal - z0).T).T[0]
    start_loss = float((goal - z0).square().mean())
    assert res.loss < 0.01 * start_loss
    torch.testing.assert_close(res.actions[0], optimum, atol=0.1, rtol=0)


def test_differentiable_rollout_equals_the_cached_rollout_in_both_token_layouts():
    for extra in ({"concat_mode": "feature"}, {"concat_mode": "token", "action_emb_dim": 16, "proprio_emb_dim": 16}):
        model = tiny_model(**extra)
        z = model.encode_observation(torch.zeros(3, 32, 32, 3, dtype=torch.uint8), torch.randn(3, 2))
        a = torch.randn(3, 5, model.config.action_dim)  # horizon 5 > num_hist 3: the window slides
        ref = model.rollout(z, a)
        got = differentiable_rollout(model, z, a)
        torch.testing.assert_close(got.visual, ref.visual, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got.proprio, ref.proprio, rtol=1e-4, atol=1e-5)


def test_gradient_refinement_improves_its_start_and_never_touches_the_weights():
    model, z, g = tiny_problem(b=1)
    model.requires_grad_(True)  # even trainable weights must not receive a .grad
    cfg = cfg_for("gradient", max_iterations=8, min_iterations=8, lr=0.2)
    (res,) = plan(model, z, g, cfg, seeds=[0])
    assert all(p.grad is None for p in model.parameters())
    assert res.grad_rollouts == cfg.max_iterations * cfg.solver().starts and res.rollouts == 1  # the final scoring
    assert res.loss <= res.loss_trace[0] + 1e-6 and min(res.loss_trace) < res.loss_trace[0]


def test_composite_samples_first_then_refines_by_gradient():
    model, z, g = tiny_problem(b=1)
    cfg = cfg_for("cem_gradient", max_iterations=6, min_iterations=6, gradient_iterations=2)
    (res,) = plan(model, z, g, cfg, seeds=[3])
    (cem,) = plan(model, z, g, replace(cfg, method="cem", min_iterations=4, max_iterations=4), seeds=[3])
    assert res.grad_rollouts == 2 * cfg.solver("gradient").starts
    assert res.loss_trace[:4] == pytest.approx(cem.loss_trace, rel=1e-5)  # the same CEM phase
    assert res.loss <= cem.loss + 1e-6  # refinement keeps the best it has seen


def test_icem_population_shrinks_and_kept_elites_warm_start_the_next_plan():
    cfg = cfg_for("icem", samples=60, elites=6, max_iterations=5, min_iterations=5)
    assert [population(cfg.solver(), i) for i in range(5)] == [60, 48, 38, 30, 24]  # 60 / 1.25**i, floor 12
    model, z, g = tiny_problem(b=1)
    (first,) = plan(model, z, g, cfg, seeds=[1])
    assert first.rollouts == sum(population(cfg.solver(), i) for i in range(5)) + 1
    assert first.elites.shape == (2, cfg.horizon, model.config.action_dim)  # round(0.3 * 6) kept
    init, elites = first.actions[None], first.elites[None]  # (1, H, A), (1, e, H, A): nothing executed
    (again,) = plan(model, z, g, cfg, init_mean=init, seeds=[2], init_elites=elites)
    (cold,) = plan(model, z, g, cfg, init_mean=init, seeds=[2])
    # the kept best elite is re-scored in the first iteration: nothing worse than where the last plan ended
    assert again.loss_trace[0] <= first.loss_trace[-1] + 1e-6
    assert again.loss_trace[0] <= cold.loss_trace[0] + 1e-6
    assert warm_start(elites, 2).shape == (1, 2, cfg.horizon, model.config.action_dim)


def test_colored_noise_is_smooth_along_the_horizon_and_white_at_beta_zero():
    white = torch.randn(4000, 32, generator=torch.Generator().manual_seed(0))

    def lag1(x):
        x = x - x.mean(dim=-1, keepdim=True)
        return float((x[:, 1:] * x[:, :-1]).mean() / x.square().mean())

    assert abs(lag1(colored(white, 0.0))) < 0.05
    assert lag1(colored(white, 2.0)) > 0.5
    assert colored(white, 2.0).std(dim=-1).mean() == pytest.approx(1.0, rel=1e-3)


def test_config_validates_the_method_and_its_settings():
    with pytest.raises(ValueError, match="method='adam'"):
        PlannerConfig(method="adam")
    with pytest.raises(ValueError, match="icem_gradient.gradient_iterations=5 must be < max_iterations=5"):
        PlannerConfig(method="icem_gradient", max_iterations=5)
    with pytest.raises(ValueError, match="icem.decay=0.5"):
        PlannerConfig().with_every(decay=0.5)
    with pytest.raises(ValueError, match="icem.keep_elites=1.5: must be >= 0 and <= 1"):
        PlannerConfig().updated({"icem": {"keep_elites": 1.5}})
    with pytest.raises(ValueError, match="mppi.temperature=0.0"):
        PlannerConfig().with_every(temperature=0.0)
    with pytest.raises(ValueError, match="cem.elite_std='both'"):
        PlannerConfig().with_every(elite_std="both")


def test_a_model_artifact_may_recommend_its_method():
    model = tiny_model()
    model.metadata = {"planner": {"method": "icem", "icem": {"beta": 1.0}}}
    cfg = PlannerConfig.for_model(model, "cpu")
    assert (cfg.method, cfg.solver().beta, cfg.solver().samples) == ("icem", 1.0, PlannerConfig.cpu_preset().solver("icem").samples)
    model.metadata = {"planner": {"method": "icem", "icem_beta": 1.0}}  # an artifact of the previous release
    assert PlannerConfig.for_model(model, "cpu") == cfg
    model.metadata = {"planner": {"method": "newton"}}
    with pytest.raises(ValueError, match="method='newton'"):
        PlannerConfig.for_model(model)
