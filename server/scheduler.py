"""One bounded queue of plan jobs and the one worker thread that runs the model.

A job is a validated request's model inputs (``PlanInput``) and its cost in
GFLOPs. The route awaits ``submit(job_input, cost)``; the worker takes jobs
in batches and answers each one as its plan stops. Nothing calls back into
the service: a job's answer is a value set on its future.

Admission: work beyond ``max_queued_gflop`` (everything queued or still to
run) is refused at once with ``Overloaded`` (503 with Retry-After, from the
measured GFLOP rate), unless the server is idle, so that any plan within the
per-request limit can run.

Batching: the worker takes the oldest job with every queued job of the same
planner config (up to ``max_batch``) and plans them together; jobs that left
a batch together come back together a few ms later, so an idle worker waits
up to ``batch_wait_s`` for as many companions as the last batch had.

Fairness: up to ``max_running`` batches are open at once and the worker runs
one planner iteration at a time, always of the batch whose requests have the
least work left (shortest remaining cost first, per request: a batch of
several light plans does not wait behind a lone one). A light plan that arrives while a
heavy one runs waits for at most the heavy batch's current iteration, then
runs to its end. A batch not stepped for ``starvation_s`` gets the next
iteration, so heavy work still progresses under a stream of light work.

Cancellation: a job whose client left (its awaiting task was cancelled) or
whose deadline passed is dropped before it starts and stopped before its
batch's next iteration if it is running.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from planning import PlannerConfig
from server import memory
from server.engine import Engine, PlanInput, PlanOutput, Run

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The queue holds more work than the server's budget; retry later."""

    def __init__(self, queued_gflop: float, budget_gflop: float, retry_after_s: int) -> None:
        super().__init__(f"{queued_gflop:.4g} GFLOP queued, budget {budget_gflop:.4g}")
        self.queued_gflop, self.budget_gflop, self.retry_after_s = queued_gflop, budget_gflop, retry_after_s


class ShuttingDown(Exception):
    """The server is stopping and takes no new work."""


class DeadlinePassed(Exception):
    """The job's deadline passed before it could start."""

    def __init__(self, waited_s: float) -> None:
        super().__init__(f"deadline passed after {waited_s:.3f} s in the queue")
        self.waited_s = waited_s


@dataclass(eq=False)
class _Job:
    input: PlanInput
    gflop: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future = field(repr=False)
    enqueued: float = field(default_factory=time.monotonic)
    started: float | None = None
    cancelled: bool = False  # set by the event loop when the client leaves

    def gone(self) -> bool:
        return self.cancelled or self.future.cancelled()


@dataclass(eq=False)
class _Running:
    jobs: list[_Job]
    run: Run
    iteration_gflop: float  # one iteration of one request
    iterations_left: int
    answered: list[bool]
    cancelled: list[bool]
    last_stepped: float = field(default_factory=time.monotonic)

    def remaining_gflop(self) -> float:
        """All the work this batch may still do (admission counts it)."""
        return len(self.run.plan.active) * self.request_left_gflop()

    def request_left_gflop(self) -> float:
        """The work one of its requests may still do: what its clients wait for (the scheduler's priority).
        Per request, not per batch, so a batch of several light plans is not put behind a lone one."""
        return self.iteration_gflop * self.iterations_left


@dataclass
class SchedulerStats:
    """Counters for /stats and /metrics (read from the event loop; ints under the GIL)."""

    batches: int = 0
    batched_requests: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # "client_left", "deadline", "shutdown"
    cancelled_running: int = 0
    overloaded: int = 0
    queue_wait_s: list[float] = field(default_factory=list)  # recent, bounded
    gflop_done: float = 0.0
    busy_s: float = 0.0

    def record_wait(self, seconds: float) -> None:
        self.queue_wait_s.append(seconds)
        if len(self.queue_wait_s) > 2048:
            del self.queue_wait_s[:1024]


class Scheduler:
    """Queue, admission, batching, fair stepping and cancellation for one engine.

    max_batch: most requests per batch. batch_wait_s: an idle worker's wait
    for companions. max_queued_gflop: admission budget. max_running: batches
    open at once. starvation_s: longest a running batch waits for an iteration.
    """

    def __init__(self, engine: Engine, *, max_batch: int = 16, batch_wait_s: float = 0.005,
                 max_queued_gflop: float = math.inf, max_running: int = 4, starvation_s: float = 2.0) -> None:
        self.engine = engine
        self.max_batch, self.batch_wait_s = max_batch, batch_wait_s
        self.max_queued_gflop, self.max_running, self.starvation_s = max_queued_gflop, max_running, starvation_s
        self.stats = SchedulerStats()
        self._pending: list[_Job] = []
        self._running: list[_Running] = []
        self._cond = threading.Condition()
        self._closing = False
        self._stopped = False
        self._last_batch = 1
        self._gflop_per_s: float | None = None  # measured, for Retry-After
        self._step_started: float | None = None  # monotonic start of the iteration running now
        self._thread = threading.Thread(target=self._work, name="wm-model", daemon=True)
        self._thread.start()

    # -- the event loop's side ------------------------------------------------------

    def cost(self, config: PlannerConfig) -> float:
        """What a plan with `config` costs, in the GFLOPs admission and priority count."""
        return self.engine.plan_gflop(config)

    async def submit(self, job_input: PlanInput, gflop: float) -> PlanOutput:
        """Queue a plan and await it. Raises Overloaded, ShuttingDown, DeadlinePassed
        or the model's own error; cancelling the awaiting task cancels the job."""
        loop = asyncio.get_running_loop()
        job = _Job(job_input, gflop, loop, loop.create_future())
        with self._cond:
            if self._closing:
                raise ShuttingDown()
            queued = self._outstanding_gflop()
            if (self._pending or self._running) and queued + gflop > self.max_queued_gflop:
                self.stats.overloaded += 1
                raise Overloaded(queued, self.max_queued_gflop, self._retry_after(queued))
            self._pending.append(job)
            self._cond.notify()
        try:
            return await job.future
        except asyncio.CancelledError:
            with self._cond:
                job.cancelled = True
                self._cond.notify()
            raise

    def queued(self) -> dict[str, Any]:
        """What waits and runs now, for /stats."""
        with self._cond:
            return {"pending": len(self._pending), "running_batches": len(self._running),
                    "running_requests": sum(len(r.run.plan.active) for r in self._running),
                    "outstanding_gflop": round(self._outstanding_gflop(), 3),
                    "budget_gflop": self.max_queued_gflop if math.isfinite(self.max_queued_gflop) else None,
                    "measured_gflop_per_s": None if self._gflop_per_s is None else round(self._gflop_per_s, 3)}

    def close(self, timeout: float = 5.0) -> None:
        """Take no new work, cancel what is queued or running, stop the worker."""
        with self._cond:
            self._closing = True
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the model thread is still in an iteration after %.1f s; leaving it", timeout)

    def health(self, wedged_after_s: float) -> str | None:
        """None when the worker is alive and its current iteration (if any) is younger
        than ``wedged_after_s``; else what is wrong (an orchestrator restarts the process)."""
        if not self._thread.is_alive():
            return "the model thread has died"
        started = self._step_started
        if started is not None and time.monotonic() - started > wedged_after_s:
            return f"one planner iteration has run for {time.monotonic() - started:.0f} s (wedged?)"
        return None

    # -- accounting (under the lock) ---------------------------------------------------

    def _outstanding_gflop(self) -> float:
        return sum(j.gflop for j in self._pending) + sum(r.remaining_gflop() for r in self._running)

    def _retry_after(self, queued_gflop: float) -> int:
        rate = self._gflop_per_s
        if not rate:
            return 1
        return max(1, math.ceil((queued_gflop - self.max_queued_gflop * 0.5) / rate))

    # -- the worker -------------------------------------------------------------------

    def _work(self) -> None:
        trimmed = True
        while True:
            with self._cond:
                while not self._pending and not self._running and not self._stopped:
                    if not trimmed:  # idle after work: give the burst's memory back
                        memory.trim()
                        trimmed = True
                    self._cond.wait()
                if self._stopped:
                    break
                batches = self._admit()
            trimmed = False
            for jobs in batches:
                self._start(jobs)
            running = self._pick()
            if running is not None:
                self._step(running)
        self._shutdown()

    def _admit(self) -> list[list[_Job]]:
        """Under the lock: batches to open now, oldest job first."""
        self._drop_gone()
        if not self._running and self._pending and self.batch_wait_s > 0:
            expected = min(self.max_batch, self._last_batch)
            until = time.monotonic() + self.batch_wait_s
            while self._compatible(self._pending[0]) < expected and not self._stopped:
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._drop_gone()
        batches: list[list[_Job]] = []
        while self._pending and len(self._running) + len(batches) < self.max_running:
            key = self._pending[0].input.batch_key
            batch = [j for j in self._pending if j.input.batch_key == key][: self.max_batch]
            taken = set(map(id, batch))
            self._pending = [j for j in self._pending if id(j) not in taken]
            batches.append(batch)
        return batches

    def _compatible(self, first: _Job) -> int:
        return sum(j.input.batch_key == first.input.batch_key for j in self._pending)

    def _drop_gone(self) -> None:
        now = time.monotonic()
        keep = []
        for job in self._pending:
            if job.gone():
                self.stats.dropped["client_left"] += 1
            elif job.input.deadline is not None and now >= job.input.deadline:
                self.stats.dropped["deadline"] += 1
                _answer(job, DeadlinePassed(now - job.enqueued))
            else:
                keep.append(job)
        self._pending = keep

    def _start(self, jobs: list[_Job]) -> None:
        """Encode a batch and open its plan; a failing batch is retried job by job."""
        now = time.monotonic()
        for job in jobs:
            job.started = now
            self.stats.record_wait(now - job.enqueued)
        try:
            self._step_started = time.monotonic()
            run = self.engine.start([j.input for j in jobs])
        except Exception as exc:  # noqa: BLE001 - handed to the requests, one by one
            if len(jobs) == 1:
                _answer(jobs[0], exc)
                return
            log.warning("a batch of %d plans failed to start (%s); starting them one by one", len(jobs), exc)
            for job in jobs:
                self._start([job])
            return
        finally:
            self._step_started = None
        config = jobs[0].input.config
        per_iteration = self.engine.plan_gflop(config) / config.max_iterations  # one iteration of one request
        self._last_batch = len(jobs)
        self.stats.batches += 1
        self.stats.batched_requests += len(jobs)
        with self._cond:
            self._running.append(_Running(jobs, run, per_iteration, config.max_iterations,
                                          [False] * len(jobs), [False] * len(jobs)))

    def _pick(self) -> _Running | None:
        """Least work left per request first, unless a batch has waited past starvation_s."""
        with self._cond:
            if not self._running:
                return None
            now = time.monotonic()
            starved = [r for r in self._running if now - r.last_stepped > self.starvation_s]
            if starved:
                return min(starved, key=lambda r: r.last_stepped)
            return min(self._running, key=lambda r: (r.request_left_gflop(), r.last_stepped))

    def _step(self, running: _Running) -> None:
        for i, job in enumerate(running.jobs):
            if job.gone() and not running.answered[i] and not running.cancelled[i]:
                running.cancelled[i] = True
                self.stats.cancelled_running += 1
                self.engine.cancel(running.run, i)
        active = len(running.run.plan.active)
        started = self._step_started = time.monotonic()
        try:
            finished = self.engine.step(running.run)
        except Exception as exc:  # noqa: BLE001 - the batch's own failure, handed to its requests
            log.warning("a batch of %d plans failed mid-plan: %s", len(running.jobs), exc)
            for i, job in enumerate(running.jobs):
                if not running.answered[i]:
                    _answer(job, exc)
            finished, running.answered = [], [True] * len(running.jobs)
        self._step_started = None
        elapsed = time.monotonic() - started
        done_gflop = active * running.iteration_gflop
        self.stats.gflop_done += done_gflop
        self.stats.busy_s += elapsed
        if elapsed > 0 and done_gflop > 0:
            rate = done_gflop / elapsed
            self._gflop_per_s = rate if self._gflop_per_s is None else 0.8 * self._gflop_per_s + 0.2 * rate
        for i, output in finished:
            running.answered[i] = True
            if not running.cancelled[i]:
                _answer(running.jobs[i], output)
        running.iterations_left = max(0, running.iterations_left - 1)
        running.last_stepped = time.monotonic()
        with self._cond:
            if running.run.plan.done or all(running.answered):
                self._running.remove(running)

    def _shutdown(self) -> None:
        """Worker, on close: every job still waiting or running is told the server stops."""
        with self._cond:
            pending, running = self._pending, self._running
            self._pending, self._running = [], []
        for job in pending:
            self.stats.dropped["shutdown"] += 1
            _answer(job, ShuttingDown())
        for r in running:
            for i, job in enumerate(r.jobs):
                if not r.answered[i]:
                    self.stats.dropped["shutdown"] += 1
                    _answer(job, ShuttingDown())


def _answer(job: _Job, outcome: PlanOutput | BaseException) -> None:
    try:
        job.loop.call_soon_threadsafe(_settle, job.future, outcome)
    except RuntimeError:  # the event loop is closed: nobody is waiting any more
        pass


def _settle(future: asyncio.Future, outcome: Any) -> None:
    if future.done():  # the request was cancelled meanwhile
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
