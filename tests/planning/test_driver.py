"""The steppable driver: step() and cancel() give the same plans as plan(), each request once."""

import math
from dataclasses import replace

import pytest
import torch

from planning import PlannerConfig, PlanBatch, plan
from tests.planning.test_cem import SMALL, tiny_problem

CFG = replace(SMALL, min_iterations=6, max_iterations=6).with_every(samples=24, elites=4)  # min_iterations = opt_steps: every request runs them all


def run(batch):
    """Step to the end; every request must come back exactly once. Returns {index: result}, steps."""
    got, steps = {}, 0
    while not batch.done:
        for i, r in batch.step():
            assert i not in got, f"request {i} returned twice"
            got[i] = r
        steps += 1
        assert steps <= 100
    assert batch.step() == []
    return got, steps


def assert_same_plan(a, b, exact=False):
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.actions, b.actions, **tol)
    assert a.loss_trace == pytest.approx(b.loss_trace, rel=1e-5)
    assert (a.iterations, a.stop_reason, a.seed) == (b.iterations, b.stop_reason, b.seed)


def test_stepping_gives_exactly_the_plans_of_plan():
    model, z, g = tiny_problem(b=3)
    ref = plan(model, z, g, CFG, seeds=[1, 2, 3])
    got, steps = run(PlanBatch(model, z, g, CFG, seeds=[1, 2, 3]))
    assert steps == CFG.max_iterations and sorted(got) == [0, 1, 2]
    for a, b in zip(ref, (got[i] for i in range(3))):
        assert_same_plan(a, b, exact=True)
        assert b.stop_reason == "max_iterations" and b.iterations == CFG.max_iterations


def test_cancel_mid_way_returns_the_request_once_and_leaves_the_others_unchanged():
    model, z, g = tiny_problem(b=3)
    ref = plan(model, z, g, CFG, seeds=[1, 2, 3])
    batch = PlanBatch(model, z, g, CFG, seeds=[1, 2, 3])
    for _ in range(3):
        assert batch.step() == []
    batch.cancel(1)
    assert batch.active == [0, 2] and not batch.done
    first = batch.step()
    assert [i for i, _ in first] == [1]
    cancelled = first[0][1]
    assert (cancelled.stop_reason, cancelled.iterations) == ("cancelled", 3)
    assert cancelled.loss_trace == pytest.approx(ref[1].loss_trace[:3], rel=1e-5)  # same path, cut short
    assert math.isfinite(cancelled.loss)
    batch.cancel(1)  # already returned: a no-op
    rest, _ = run(batch)
    assert sorted(rest) == [0, 2]  # request 1 is not returned again
    assert_same_plan(rest[0], ref[0])
    assert_same_plan(rest[2], ref[2])


def test_cancel_before_the_first_step_returns_the_scored_warm_start():
    model, z, g = tiny_problem(b=2)
    warm = torch.full((2, CFG.horizon, model.config.action_dim), 0.25)
    batch = PlanBatch(model, z, g, CFG, init_mean=warm, seeds=[5, 6])
    batch.cancel(0)
    (i, res), = [x for x in batch.step() if x[0] == 0]
    assert (i, res.stop_reason, res.iterations, res.loss_trace) == (0, "cancelled", 0, [])
    torch.testing.assert_close(res.actions, warm[0])
    (alone,) = plan(model, z.index(slice(0, 1)), g.index(slice(0, 1)), replace(CFG, max_iterations=1),
                    init_mean=warm[:1], seeds=[5])
    assert res.loss > alone.loss_trace[0] - 1e-6  # the trace holds the best sample; sample 0 is the warm start
    assert batch.active == [1]


def test_cancelling_a_finished_request_is_a_no_op():
    model, z, g = tiny_problem(b=2)
    past = 0.0  # time.monotonic() is far beyond 0: request 0 stops at the first deadline check
    batch = PlanBatch(model, z, g, CFG, seeds=[1, 2], deadline=[past, None])
    assert batch.step() == []
    (i, res), = batch.step()
    assert (i, res.stop_reason, res.iterations) == (0, "deadline", 1)
    batch.cancel(0)
    rest, _ = run(batch)
    assert list(rest) == [1] and rest[1].stop_reason == "max_iterations"


def test_two_batches_stepped_interleaved_equal_each_run_alone():
    model, z, g = tiny_problem(b=3)
    cfg_b = replace(CFG, min_iterations=5, max_iterations=5).with_every(samples=16, elites=3)
    a_ref = plan(model, z.index(slice(0, 2)), g.index(slice(0, 2)), CFG, seeds=[1, 2])
    b_ref = plan(model, z.index(slice(2, 3)), g.index(slice(2, 3)), cfg_b, seeds=[9])
    a = PlanBatch(model, z.index(slice(0, 2)), g.index(slice(0, 2)), CFG, seeds=[1, 2])
    b = PlanBatch(model, z.index(slice(2, 3)), g.index(slice(2, 3)), cfg_b, seeds=[9])
    got_a, got_b = {}, {}
    while not (a.done and b.done):
        got_a.update(a.step())
        got_b.update(b.step())
    for ref, got in ((a_ref, got_a), (b_ref, got_b)):
        for i, r in enumerate(ref):
            assert_same_plan(r, got[i], exact=True)


@pytest.mark.parametrize("path,value", [
    ("horizon", True), ("cem.samples", 3.0), ("max_iterations", "5"), ("chunk_size", False), ("min_iterations", -1),
    ("alpha", float("nan")), ("cem.sigma", float("inf")), ("mppi.min_sigma", -float("inf")), ("base", True),
    ("min_improvement", "0.1"), ("memory_budget_mb", 0), ("gradient.starts", 0), ("subgoals", 1),
])
def test_config_rejects_bools_non_numbers_and_non_finite_values_naming_them(path, value):
    section, _, name = path.rpartition(".")
    overrides = {section: {name: value}} if section else {name: value}
    with pytest.raises(ValueError, match=f"^{path}={value!r}".replace("(", r"\(").replace(")", r"\)")):
        PlannerConfig().updated(overrides)


def test_the_previous_releases_flat_names_map_to_every_section_that_has_the_setting():
    cfg = PlannerConfig().updated({"num_samples": 40, "topk": 4, "opt_steps": 7, "var_scale": 0.5, "icem_beta": 1.0,
                                   "grad_iterations": 3, "icem": {"samples": 50}})
    assert cfg.max_iterations == 7
    assert (cfg.solver("cem").samples, cfg.solver("mppi").samples, cfg.solver("icem").samples) == (40, 40, 50)
    assert (cfg.solver("cem").elites, cfg.solver("icem").elites) == (4, 4)
    assert {cfg.get(f"{s}.sigma") for s in ("cem", "icem", "mppi", "gradient")} == {0.5}
    assert cfg.get("icem.beta") == 1.0 and cfg.get("icem_gradient.gradient_iterations") == 3
    with pytest.raises(ValueError, match="^cem.foo: not a setting of cem"):
        PlannerConfig().updated({"cem": {"foo": 1}})
    with pytest.raises(ValueError, match="^foo: not a planner setting"):
        PlannerConfig().updated({"foo": 1})


def test_every_setting_declares_its_meaning_and_a_server_bound_for_every_unbounded_number():
    for path, f in PlannerConfig.declared():
        assert f.metadata["doc"], path
        if f.metadata["wire"] and f.metadata["kind"] in ("int", "float") and f.metadata["le"] is None:
            assert f.metadata["limit"] is not None, f"{path}: a client could send any value"


def test_config_accepts_an_int_for_a_float_field_and_stores_a_float():
    cfg = replace(PlannerConfig(), alpha=1).with_every(sigma=2)
    assert isinstance(cfg.alpha, float) and cfg == replace(PlannerConfig(), alpha=1.0).with_every(sigma=2.0)


def test_warm_started_requests_stop_at_the_warm_budget_and_cold_ones_run_theirs():
    model, z, g = tiny_problem(b=3)
    cfg = CFG.updated({"warm_max_iterations": 2})
    init = torch.zeros(3, cfg.horizon, model.config.action_dim)
    got, _ = run(PlanBatch(model, z, g, cfg, init_mean=init, seeds=[1, 2, 3], warm=[True, False, True]))
    assert [got[i].iterations for i in range(3)] == [2, cfg.max_iterations, 2]
    assert all(r.stop_reason == "max_iterations" for r in got.values())
    # the cold request's plan is the one it gets in a batch of its own: budgets are per request
    (alone,) = plan(model, z.index(torch.tensor([1])), g.index(torch.tensor([1])), cfg, init[1:2], seeds=[2], warm=[False])
    assert_same_plan(got[1], alone)
    # init_mean given and no flags: every request is warm; none given: every request is cold
    assert {r.iterations for r in plan(model, z, g, cfg, init, seeds=[1, 2, 3])} == {2}
    assert {r.iterations for r in plan(model, z, g, cfg, seeds=[1, 2, 3])} == {cfg.max_iterations}
    with pytest.raises(ValueError, match="warm must be"):
        PlanBatch(model, z, g, cfg, seeds=[1, 2, 3], warm=[True, True, True])  # warm without a previous plan


def test_the_warm_budget_never_raises_max_iterations():
    model, z, g = tiny_problem(b=1)
    cfg = CFG.updated({"warm_max_iterations": 50})
    (r,) = plan(model, z, g, cfg, torch.zeros(1, cfg.horizon, model.config.action_dim), seeds=[1])
    assert r.iterations == cfg.max_iterations


def test_a_composites_warm_plans_keep_their_whole_schedule_and_reach_the_gradient_phase():
    model, z, g = tiny_problem(b=1)
    cfg = CFG.updated({"method": "cem_gradient", "warm_max_iterations": 2, "cem_gradient": {"gradient_iterations": 2},
                       "gradient": {"starts": 1}})
    (r,) = plan(model, z, g, cfg, torch.zeros(1, cfg.horizon, model.config.action_dim), seeds=[1])
    assert r.iterations == cfg.max_iterations and r.grad_rollouts > 0
