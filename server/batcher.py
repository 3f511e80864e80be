"""Micro-batching: concurrent plans share the model's forward passes.

A request is one job on the model thread: `prepare` (encode its frames, read
its warm start) then plan. When the worker takes the oldest waiting job, it
takes with it every waiting job with an equal planner config (up to
`max_batch`) and plans them in one batched `planning.plan` call. Each request
keeps its own seed, warm start, early stopping and deadline, gets the plan it
would have got alone (to float tolerance), and is answered as soon as its own
plan stops, while the rest of its batch goes on.

Batches form from whatever queued while the previous batch ran. Requests
that leave a batch together come back together a few milliseconds later, so
when a job finds the worker idle after a batch of n > 1, the worker first
waits up to `wait_s` for n compatible requests; without it, the first to
return would be planned alone and hold up the others for a whole plan. After
a lone request (one client) nobody waits. If a batch fails, its requests are retried
one by one, so one bad request cannot fail the others.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from models import Latent
from planning import CEMConfig, PlanResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A request's model inputs: latents (1, ...) and its warm start (1, H, A) or None (cold)."""

    z_obs: Latent
    z_goal: Latent
    init_mean: torch.Tensor | None


@dataclass(frozen=True)
class Planned:
    """A request's plan, its actions in env units, and where its time went."""

    result: PlanResult
    actions: np.ndarray
    prepared: Prepared
    encode_s: float  # this request's `prepare`
    plan_s: float  # from the start of the (shared) plan call to this request's answer
    batch: int  # requests planned together


# (prepared inputs, config, seeds, deadlines, done): plans them all in one call and
# calls done(i, plan, env actions) as soon as request i's plan is final.
PlanMany = Callable[[list[Prepared], CEMConfig, list[int | None], list[float | None],
                     Callable[[int, PlanResult, np.ndarray], None]], None]


@dataclass(eq=False)
class _Job:
    prepare: Callable[[], Prepared]
    config: CEMConfig
    seed: int | None
    deadline: float | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Queues plans for one worker thread (`executor`) and batches compatible ones.

    max_batch: most requests per plan call (1: every request alone).
    wait_s: how long an idle worker waits for companions of a new arrival.
    on_batch: called on the worker with each batch's size.
    """

    def __init__(self, executor: ThreadPoolExecutor, plan_many: PlanMany, max_batch: int = 1,
                 wait_s: float = 0.0, on_batch: Callable[[int], None] | None = None) -> None:
        self._executor, self._plan_many = executor, plan_many
        self.max_batch, self.wait_s, self.on_batch = max_batch, wait_s, on_batch
        self._pending: list[_Job] = []
        self._lock = threading.Lock()
        self._draining = False  # a _drain is queued on or running on the worker
        self._last_batch = 1  # requests in the last batch: how many may come back together

    async def submit(self, prepare: Callable[[], Prepared], config: CEMConfig, seed: int | None,
                     deadline: float | None) -> Planned:
        loop = asyncio.get_running_loop()
        job = _Job(prepare, config, seed, deadline, loop, loop.create_future())
        with self._lock:
            self._pending.append(job)
            idle = not self._draining
            self._draining = True
        if idle:
            self._executor.submit(self._drain, True)
        return await job.future

    def _take(self) -> list[_Job]:
        with self._lock:
            config = self._pending[0].config
            batch = [j for j in self._pending if j.config == config][: self.max_batch]
            self._pending = [j for j in self._pending if all(j is not b for b in batch)]
        return batch

    def _compatible(self) -> int:
        with self._lock:
            return sum(j.config == self._pending[0].config for j in self._pending)

    def _drain(self, woke: bool) -> None:
        """Worker: prepare and plan the oldest waiting request with its compatible companions."""
        expected = min(self.max_batch, self._last_batch)
        if woke and expected > 1 and self.wait_s > 0:
            until = time.monotonic() + self.wait_s
            while self._compatible() < expected and time.monotonic() < until:
                time.sleep(min(5e-4, self.wait_s))
        batch = self._take()
        self._last_batch = len(batch)
        ready: list[tuple[_Job, Prepared, float]] = []
        for job in batch:
            started = time.monotonic()
            try:
                ready.append((job, job.prepare(), time.monotonic() - started))
            except Exception as exc:  # noqa: BLE001 - this request's own failure, handed to it
                job.loop.call_soon_threadsafe(_settle, job.future, exc)
        self._plan(ready)
        with self._lock:
            if not self._pending:
                self._draining = False
                return
        try:  # behind whatever else waits for the worker
            self._executor.submit(self._drain, False)
        except RuntimeError as exc:  # shutting down: nothing will plan them
            with self._lock:
                stranded, self._pending = self._pending, []
            for job in stranded:
                job.loop.call_soon_threadsafe(_settle, job.future, exc)

    def _plan(self, ready: list[tuple[_Job, Prepared, float]]) -> None:
        """Plan `ready` together, answering each job as its plan stops; if the call
        fails, the jobs not yet answered are planned one by one."""
        if not ready:
            return
        left = self._plan_together(ready)
        if not left:
            return
        if len(ready) == 1:
            _, exc = left[0]
            ready[0][0].loop.call_soon_threadsafe(_settle, ready[0][0].future, exc)
            return
        log.warning("a batch of %d plans failed (%s); planning the %d unanswered one by one",
                    len(ready), left[0][1], len(left))
        for one, _ in left:
            failed = self._plan_together([one])
            for (job, _, _), exc in failed:
                job.loop.call_soon_threadsafe(_settle, job.future, exc)

    def _plan_together(self, ready: list[tuple[_Job, Prepared, float]]
                       ) -> list[tuple[tuple[_Job, Prepared, float], BaseException]]:
        """One plan call; returns the entries left unanswered by a failure, with it."""
        answered = [False] * len(ready)
        started = time.monotonic()

        def done(i: int, result: PlanResult, actions: np.ndarray) -> None:
            job, prepared, encode_s = ready[i]
            planned = Planned(result, actions, prepared, encode_s, time.monotonic() - started, len(ready))
            answered[i] = True
            job.loop.call_soon_threadsafe(_settle, job.future, planned)

        jobs = [j for j, _, _ in ready]
        try:
            self._plan_many([p for _, p, _ in ready], jobs[0].config, [j.seed for j in jobs],
                            [j.deadline for j in jobs], done)
        except Exception as exc:  # noqa: BLE001 - handed to the requests it left unanswered
            return [(entry, exc) for entry, ok in zip(ready, answered) if not ok]
        finally:
            if self.on_batch is not None:
                self.on_batch(len(ready))
        return []


def _settle(future: asyncio.Future, outcome: Any) -> None:
    if future.done():  # the request was cancelled meanwhile
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
