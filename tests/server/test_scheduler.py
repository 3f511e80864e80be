"""The scheduler: batched plans equal plans made alone, one failure stays one
request's, fair stepping, cancellation, admission, shutdown. Driven directly
(no HTTP) on a tiny model, so each behaviour is pinned without timing races."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from models.testing import tiny_model
from planning import PlannerConfig
from server.engine import Engine, PlanInput, PlanOutput
from server.scheduler import DeadlinePassed, Overloaded, Scheduler, ShuttingDown

CFG = PlannerConfig(horizon=3, min_iterations=2, patience=2, max_iterations=6).with_every(samples=24, elites=4)
OTHER = CFG.with_every(samples=16)
HEAVY = dataclasses.replace(CFG, min_iterations=40, max_iterations=40).with_every(samples=2048)
ACTION_DIM = tiny_model(seed=0).config.action_dim


def pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def job(obs: int, goal: int, config: PlannerConfig = CFG, seed: int = 0, init: bool = False,
        deadline: float | None = None) -> PlanInput:
    rng = np.random.default_rng(obs)
    init_mean = torch.from_numpy(rng.standard_normal((1, config.horizon, ACTION_DIM)).astype(np.float32)) if init else None
    return PlanInput(pixels(obs), rng.standard_normal(2).astype(np.float32), config, goal=pixels(goal),
                     goal_proprio=rng.standard_normal(2).astype(np.float32), init_mean=init_mean, seed=seed,
                     deadline=deadline)


@pytest.fixture
def engine() -> Engine:
    return Engine(tiny_model(seed=0), torch.device("cpu"), CFG)


@contextmanager
def scheduler(engine: Engine, **kwargs: object) -> Iterator[Scheduler]:
    s = Scheduler(engine, **kwargs)  # type: ignore[arg-type]
    try:
        yield s
    finally:
        s.close()


def alone(engine: Engine, inp: PlanInput) -> PlanOutput:
    run = engine.start([inp])
    while True:
        for _, out in engine.step(run):
            return out


async def submit_together(s: Scheduler, inputs: list[PlanInput], gflop: float = 1.0) -> list:
    """Queue every input before the worker can take any (its lock is ours meanwhile), so they batch."""
    with s._cond:  # reentrant: the submits below run on this thread
        tasks = [asyncio.ensure_future(s.submit(i, gflop)) for i in inputs]
        await asyncio.sleep(0.05)
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_batched_plans_equal_plans_made_alone(engine):
    inputs = [job(1, 2, seed=11), job(3, 4, seed=12, init=True), job(5, 6, seed=13, deadline=time.monotonic() + 600),
              job(7, 8, OTHER, seed=14), job(1, 6, seed=15, init=True)]
    with scheduler(engine, max_batch=8) as s:
        batched = asyncio.run(submit_together(s, inputs))
        assert (s.stats.batches, s.stats.batched_requests) == (2, 5)
    for done, inp in zip(batched, inputs):
        ref = alone(engine, inp)
        torch.testing.assert_close(done.result.actions, ref.result.actions, rtol=1e-5, atol=1e-6)
        assert done.result.loss_trace == pytest.approx(ref.result.loss_trace, rel=1e-5)
        assert (done.result.iterations, done.result.stop_reason) == (ref.result.iterations, ref.result.stop_reason)
        assert done.actions.shape == (CFG.horizon * engine.info.frameskip, 2)
    assert [d.batch for d in batched] == [4, 4, 4, 1, 4]
    assert len({str(d.result.actions) for d in batched}) == len(inputs)  # the comparison can tell them apart


def test_a_failing_request_does_not_fail_its_batch(engine):
    inputs = [job(1, 2), job(3, 4), job(5, 6)]
    bad = torch.zeros(1, CFG.horizon + 1, ACTION_DIM)  # wrong horizon: PlanBatch refuses it
    inputs[1] = dataclasses.replace(inputs[1], init_mean=bad)
    with scheduler(engine, max_batch=8) as s:
        out = asyncio.run(submit_together(s, inputs))
    assert isinstance(out[1], ValueError)
    assert isinstance(out[0], PlanOutput) and isinstance(out[2], PlanOutput)


def test_an_idle_worker_waits_for_the_last_batch_to_come_back_but_a_lone_client_does_not(engine):
    wait = 2.0
    inputs = [job(1, 2), job(3, 4), job(5, 6)]

    async def one_by_one(s: Scheduler) -> list:
        out = []
        for i in inputs:
            started = time.monotonic()
            out.append(await s.submit(i, 1.0))
            assert time.monotonic() - started < wait / 2, "a lone request waited for companions"
        return out

    async def staggered(s: Scheduler) -> list:
        tasks = []
        for i in inputs:
            tasks.append(asyncio.ensure_future(s.submit(i, 1.0)))
            await asyncio.sleep(0.02)
        return await asyncio.gather(*tasks)

    with scheduler(engine, max_batch=8, batch_wait_s=wait) as s:
        assert [d.batch for d in asyncio.run(one_by_one(s))] == [1, 1, 1]
        asyncio.run(submit_together(s, inputs))  # a batch of three...
        back = asyncio.run(staggered(s))  # ...comes back 20 ms apart and is batched again
    assert [d.batch for d in back] == [3, 3, 3]


def test_max_batch_one_plans_every_request_alone(engine):
    with scheduler(engine, max_batch=1) as s:
        out = asyncio.run(submit_together(s, [job(1, 2), job(3, 4), job(5, 6)]))
        assert s.stats.batches == 3
    assert [d.batch for d in out] == [1, 1, 1]


def test_a_request_that_stops_early_is_answered_before_its_batch_ends(engine):
    long = dataclasses.replace(CFG, min_iterations=40, max_iterations=40).with_every(samples=1024)
    inputs = [job(1, 2, long, deadline=time.monotonic() + 0.3), job(3, 4, long)]
    with scheduler(engine, max_batch=8) as s:
        early, late = asyncio.run(submit_together(s, inputs))
    assert early.result.stop_reason == "deadline" and early.result.iterations < 40
    assert late.result.iterations == 40 and early.batch == late.batch == 2
    assert early.plan_s < late.plan_s


def test_a_light_plan_is_not_starved_by_a_heavy_one(engine):
    """Shortest remaining work first: a light plan arriving during a heavy plan
    runs to its end in between the heavy plan's iterations."""

    async def run(s: Scheduler) -> tuple[PlanOutput, PlanOutput, float]:
        heavy = asyncio.ensure_future(s.submit(job(1, 2, HEAVY), engine.plan_gflop(HEAVY)))
        await asyncio.sleep(0.3)  # the heavy plan is running
        started = time.monotonic()
        light = await s.submit(job(3, 4), engine.plan_gflop(CFG))
        light_s = time.monotonic() - started
        return light, await heavy, light_s

    with scheduler(engine) as s:
        light, heavy, light_s = asyncio.run(run(s))
    assert heavy.result.iterations == 40 and light.result.iterations >= 1
    # The light plan finished long before the heavy one: it never waited for the heavy plan to end.
    assert light_s < heavy.plan_s / 4, (light_s, heavy.plan_s)


def test_a_cancelled_job_stops_before_its_next_iteration(engine):
    async def run(s: Scheduler) -> None:
        heavy = asyncio.ensure_future(s.submit(job(1, 2, HEAVY), engine.plan_gflop(HEAVY)))
        await asyncio.sleep(0.3)
        heavy.cancel()  # what the route does when the client disconnects
        with pytest.raises(asyncio.CancelledError):
            await heavy
        started = time.monotonic()
        while s.queued()["running_batches"] and time.monotonic() - started < 10:
            await asyncio.sleep(0.01)

    with scheduler(engine) as s:
        asyncio.run(run(s))
        assert s.stats.cancelled_running == 1 and s.queued()["running_batches"] == 0
        assert s.stats.gflop_done < engine.plan_gflop(HEAVY) / 2  # it did not run to its end


def test_a_job_whose_client_left_or_whose_deadline_passed_never_starts(engine):
    async def run(s: Scheduler) -> list:
        with s._cond:  # hold the worker while the jobs queue
            gone = asyncio.ensure_future(s.submit(job(1, 2), 1.0))
            late = asyncio.ensure_future(s.submit(job(3, 4, deadline=time.monotonic() + 0.01), 1.0))
            await asyncio.sleep(0.05)
            gone.cancel()
            await asyncio.sleep(0.05)
        return await asyncio.gather(gone, late, return_exceptions=True)

    with scheduler(engine) as s:
        gone, late = asyncio.run(run(s))
        assert s.stats.batches == 0 and s.stats.dropped == {"client_left": 1, "deadline": 1}
    assert isinstance(gone, asyncio.CancelledError) and isinstance(late, DeadlinePassed)


def test_work_beyond_the_queue_budget_is_refused_with_a_retry_time(engine):
    async def run(s: Scheduler) -> None:
        first = asyncio.ensure_future(s.submit(job(1, 2, HEAVY), 10.0))
        await asyncio.sleep(0.2)
        with pytest.raises(Overloaded) as info:
            await s.submit(job(3, 4), 10.0)
        assert info.value.retry_after_s >= 1 and info.value.budget_gflop == 15.0
        first.cancel()

    with scheduler(engine, max_queued_gflop=15.0) as s:
        asyncio.run(run(s))
        assert s.stats.overloaded == 1


def test_closing_answers_every_waiting_job(engine):
    async def run(s: Scheduler) -> list:
        tasks = [asyncio.ensure_future(s.submit(job(i, i + 1, HEAVY), 1.0)) for i in range(3)]
        await asyncio.sleep(0.3)
        await asyncio.to_thread(s.close)
        return await asyncio.gather(*tasks, return_exceptions=True)

    s = Scheduler(engine, max_batch=1, max_running=1)
    started = time.monotonic()
    out = asyncio.run(run(s))
    assert all(isinstance(o, ShuttingDown) for o in out) and time.monotonic() - started < 10
    with pytest.raises(ShuttingDown):
        asyncio.run(s.submit(job(1, 2), 1.0))
