"""The steppable driver: step() and cancel() give the same plans as plan(), each request once."""

import math
from dataclasses import replace

import pytest
import torch

from planning import CEMConfig, PlanBatch, plan
from tests.planning.test_cem import SMALL, tiny_problem

CFG = replace(SMALL, num_samples=24, topk=4, opt_steps=6, min_iterations=6)  # min_iterations = opt_steps: every request runs them all


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
    assert steps == CFG.opt_steps and sorted(got) == [0, 1, 2]
    for a, b in zip(ref, (got[i] for i in range(3))):
        assert_same_plan(a, b, exact=True)
        assert b.stop_reason == "max_iterations" and b.iterations == CFG.opt_steps


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
    (alone,) = plan(model, z.index(slice(0, 1)), g.index(slice(0, 1)), replace(CFG, opt_steps=1),
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
    cfg_b = replace(CFG, num_samples=16, topk=3, opt_steps=5, min_iterations=5)
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


def test_last_step_seconds_is_measured():
    model, z, g = tiny_problem(b=1)
    batch = PlanBatch(model, z, g, CFG, seeds=[0])
    assert batch.last_step_seconds == 0.0
    batch.step()
    assert batch.last_step_seconds > 0.0


@pytest.mark.parametrize("field,value", [
    ("horizon", True), ("num_samples", 3.0), ("opt_steps", "5"), ("chunk_size", False), ("min_iterations", -1),
    ("alpha", float("nan")), ("var_scale", float("inf")), ("min_std", -float("inf")), ("base", True),
    ("min_improvement", "0.1"), ("memory_budget_mb", 0),
])
def test_config_rejects_bools_non_numbers_and_non_finite_values_naming_them(field, value):
    with pytest.raises(ValueError, match=f"^{field}={value!r}".replace("(", r"\(").replace(")", r"\)")):
        replace(CEMConfig(), **{field: value})


def test_config_accepts_an_int_for_a_float_field_and_stores_a_float():
    cfg = replace(CEMConfig(), alpha=1, var_scale=2)
    assert isinstance(cfg.alpha, float) and cfg == replace(CEMConfig(), alpha=1.0, var_scale=2.0)
