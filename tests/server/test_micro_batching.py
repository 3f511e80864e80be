"""Micro-batching: concurrent plans share one CEM call and get the plans they would get alone."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest
import torch

from models import Latent
from models.testing import tiny_model
from planning import CEMConfig
from server.batcher import Prepared
from server.engine import Engine

CFG = CEMConfig(horizon=3, num_samples=24, topk=4, opt_steps=6, min_iterations=2, patience=2)
OTHER = dataclasses.replace(CFG, num_samples=16)


def latent(model, seed: int) -> Latent:
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8, generator=g)
    with torch.inference_mode():
        return model.encode_observation(frames, torch.randn(1, 2, generator=g))


def requests(model) -> list[dict]:
    """Cold and warm starts, several seeds, a deadline, and one other config."""
    warm = torch.randn(1, CFG.horizon, model.config.action_dim, generator=torch.Generator().manual_seed(9))
    far = time.monotonic() + 600
    specs = [(1, 2, CFG, None, 11, None), (3, 4, CFG, warm, 12, None), (5, 6, CFG, None, 13, far),
             (7, 8, OTHER, None, 14, None), (1, 6, CFG, warm, 15, None)]
    return [dict(z_obs=latent(model, o), z_goal=latent(model, g), config=c, init_mean=i, seed=s, deadline=d)
            for o, g, c, i, s, d in specs]


def queued(engine: Engine, r: dict):  # noqa: ANN201 - a coroutine
    prepared = Prepared(r["z_obs"], r["z_goal"], r["init_mean"])
    return engine.plan_queued(lambda: prepared, r["config"], r["seed"], r["deadline"])


async def plan_concurrently(engine: Engine, reqs: list[dict]) -> list:
    """Hold the worker until every request is queued, so they batch."""
    gate = threading.Event()
    blocker = asyncio.ensure_future(engine.run(gate.wait))
    tasks = [asyncio.ensure_future(queued(engine, r)) for r in reqs]
    await asyncio.sleep(0.05)  # every task is waiting in the queue now
    gate.set()
    await blocker
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_batched_plans_equal_plans_made_alone():
    model = tiny_model(seed=0)
    engine = Engine(model, torch.device("cpu"), CFG, max_batch=8)
    sizes: list[int] = []
    engine.batcher.on_batch = sizes.append
    reqs = requests(model)
    try:
        batched = asyncio.run(plan_concurrently(engine, reqs))
        alone = [engine.plan(r["z_obs"], r["z_goal"], r["config"], r["init_mean"], r["seed"], r["deadline"])
                 for r in reqs]
    finally:
        engine.close()
    assert sorted(sizes) == [1, 4], "four requests share a config and batch; the other plans alone"
    for done, ref in zip(batched, alone):
        res = done.result
        torch.testing.assert_close(res.actions, ref.actions, rtol=1e-5, atol=1e-6)
        assert res.loss_trace == pytest.approx(ref.loss_trace, rel=1e-5)
        assert (res.iterations, res.stop_reason, res.seed) == (ref.iterations, ref.stop_reason, ref.seed)
        assert done.actions.shape == (CFG.horizon * model.config.frameskip, model.config.raw_action_dim)
    assert [d.batch for d in batched] == [4, 4, 4, 1, 4]
    assert len({str(d.result.actions) for d in batched}) == len(reqs)  # the comparison can tell them apart


def test_a_failing_request_does_not_fail_its_batch():
    model = tiny_model(seed=0)
    engine = Engine(model, torch.device("cpu"), CFG, max_batch=8)
    reqs = requests(model)[:3]
    reqs[1]["init_mean"] = torch.zeros(1, CFG.horizon + 1, model.config.action_dim)  # wrong horizon
    try:
        out = asyncio.run(plan_concurrently(engine, reqs))
    finally:
        engine.close()
    assert isinstance(out[1], ValueError)
    assert not isinstance(out[0], BaseException) and not isinstance(out[2], BaseException)


def test_a_failing_prepare_fails_only_its_request():
    model = tiny_model(seed=0)
    engine = Engine(model, torch.device("cpu"), CFG, max_batch=8)
    reqs = requests(model)[:3]

    def broken() -> Prepared:
        raise RuntimeError("encoder failed")

    async def run() -> list:
        gate = threading.Event()
        blocker = asyncio.ensure_future(engine.run(gate.wait))
        tasks = [asyncio.ensure_future(queued(engine, reqs[0])),
                 asyncio.ensure_future(engine.plan_queued(broken, CFG, 1, None)),
                 asyncio.ensure_future(queued(engine, reqs[2]))]
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        out = asyncio.run(run())
    finally:
        engine.close()
    assert isinstance(out[1], RuntimeError)
    assert out[0].batch == out[2].batch == 2


def test_an_idle_worker_waits_for_the_last_batch_to_come_back_but_a_lone_client_does_not_wait():
    model = tiny_model(seed=0)
    wait = 2.0
    engine = Engine(model, torch.device("cpu"), CFG, max_batch=8, batch_wait_s=wait)
    reqs = requests(model)[:3]

    async def one_by_one() -> list:
        out = []
        for r in reqs:
            started = time.monotonic()
            out.append(await queued(engine, r))
            assert time.monotonic() - started < wait / 2, "a lone request waited for companions"
        return out

    async def staggered() -> list:
        tasks = []
        for r in reqs:
            tasks.append(asyncio.ensure_future(queued(engine, r)))
            await asyncio.sleep(0.02)
        return await asyncio.gather(*tasks)

    try:
        assert [d.batch for d in asyncio.run(one_by_one())] == [1, 1, 1]
        asyncio.run(plan_concurrently(engine, reqs))  # a batch of three...
        back = asyncio.run(staggered())  # ...comes back 20 ms apart and is batched again
        assert [d.batch for d in back] == [3, 3, 3]
    finally:
        engine.close()


def test_max_batch_one_plans_every_request_alone():
    model = tiny_model(seed=0)
    engine = Engine(model, torch.device("cpu"), CFG, max_batch=1)
    sizes: list[int] = []
    engine.batcher.on_batch = sizes.append
    try:
        asyncio.run(plan_concurrently(engine, requests(model)[:3]))
    finally:
        engine.close()
    assert sizes == [1, 1, 1]


def test_a_request_that_stops_early_is_answered_before_its_batch_ends():
    model = tiny_model(seed=0)
    engine = Engine(model, torch.device("cpu"), CFG, max_batch=8)
    long = dataclasses.replace(CFG, opt_steps=40, min_iterations=40)
    reqs = [dict(r, config=long) for r in requests(model)[:2]]
    reqs[0]["deadline"] = time.monotonic() - 1.0  # one iteration, then its deadline has passed
    try:
        early, late = asyncio.run(plan_concurrently(engine, reqs))
    finally:
        engine.close()
    assert (early.result.stop_reason, early.result.iterations) == ("deadline", 1)
    assert late.result.iterations == 40 and early.batch == late.batch == 2
    assert early.plan_s < late.plan_s / 4
