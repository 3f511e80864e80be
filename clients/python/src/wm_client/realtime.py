"""The real-time control loop: actions at a fixed rate while the next plan is computed.

A robot cannot pause while the planner thinks. ``ControlLoop`` with
``LoopConfig(mode="async", control_hz=...)`` runs this loop: the calling
thread executes one env action per control tick (``1 / control_hz`` s),
and a planner thread requests the next plan meanwhile. ``mode="hold"`` is
the same clock with the robot holding still while each plan is computed
(the synchronous loop, in real time: the baseline of benchmarks/realtime.py).
A tick with nothing to execute calls ``robot.hold()`` if the robot has one
(a simulator steps standing still; a real arm holds position), then ``step()``.

The timeline. ``t`` counts the model steps the robot has executed (a tick
with nothing to execute is a hold; it does not advance ``t``). A request
leaves at a model-step boundary ``t0`` with the frame and proprio of that
instant and, when compensating (``compensate=True``), the next ``k`` model
steps of the current plan as ``pending_actions``: the steps the robot will
execute before the reply can take effect. ``k`` covers the measured latency
(``latency_margin`` x the median of the last ``latency_window`` round
trips, in model steps, at least 1, at most what the plan has left). The
server plans from the state the model predicts after them, so the new plan's
step ``j`` is meant for model step ``S + j``, ``S = t0 + k``:

* early (arrives before ``S``): the robot finishes the pending steps, then
  switches at ``S``;
* on time: switches at the boundary it arrives at (``S``);
* late (arrives at ``t > S``: the robot went on with the old plan): the
  switch is aligned in time, at the new plan's step ``t - S``. Starting it at
  step 0 would repeat, from a later state, motion the robot already made;
  every model step is executed exactly once, from the plan meant for it.
  Counted in ``LoopReport.late_plans`` / ``late_steps``.

Without compensation (``compensate=False``) a request sends no pending
actions and its reply is executed from step 0 as soon as it arrives: the
plan was made for the state at ``t0``, executed from the state at arrival
(what the benchmark shows this costs).

A new request leaves only after the loop switched to the last reply, so the
server's last plan (session or ``mpc_state``) is always the plan being
executed, and ``executed_steps`` is ``t`` minus that plan's start.
"""

from __future__ import annotations

import math
import queue
import statistics
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from wm_client.control_loop import ControlLoop


@dataclass
class _Plan:
    actions: np.ndarray  # (H, frameskip, raw_action_dim) env units
    start: int  # the model step (the loop's t) its step 0 is meant for

    def left(self, t: int) -> int:
        return max(0, len(self.actions) - (t - self.start))


@dataclass
class _Request:
    t0: int  # the model step at which frame and proprio were taken
    pending: int  # model steps sent as pending_actions
    sent_at: float


def plan_actions(reply: dict[str, Any]) -> np.ndarray:
    """A reply's actions as (H, frameskip, raw_action_dim)."""
    env = np.asarray(reply["actions"], dtype=np.float64)  # (H * frameskip, A)
    return env.reshape(-1, int(reply["frameskip"]), env.shape[-1])


def pending_steps(latency_s: list[float], control_hz: float, frameskip: int, margin: float, window: int) -> int:
    """Model steps a plan must cover before it can take effect: the median recent round trip
    x margin, in model steps of ``frameskip / control_hz`` s, at least 1 (the step the robot
    executes while the request is in flight).

    The median, not the slowest: covering the tail costs every plan, a late plan costs only
    itself. Each extra pending step starts the plan from a state predicted one step further
    (the default wall model's latent error: 0.0006, 0.02, 0.08 MSE after 1, 2, 4 steps,
    benchmarks.studies.prediction_drift) and
    leaves the robot one more step on the old plan; a plan later than the estimate is switched
    to at the step meant for its arrival, losing only the steps it was late by."""
    recent = sorted(latency_s[-window:]) or [0.0]
    median = statistics.median(recent)
    return max(1, math.ceil(median * margin * control_hz / frameskip - 1e-9))


class _Planner(threading.Thread):
    """Sends one request at a time for the loop, off the control thread."""

    def __init__(self, loop: ControlLoop) -> None:
        super().__init__(name="wm-planner", daemon=True)
        self.loop = loop
        self.inbox: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self.outbox: queue.Queue[tuple[_Request, dict[str, Any] | None, float, BaseException | None]] = queue.Queue()

    def run(self) -> None:
        while (job := self.inbox.get()) is not None:
            request, frame, proprio, executed, pending = job
            reply, error = None, None
            try:
                reply = self.loop._plan_or_replan(frame, executed, proprio, pending)
            except BaseException as exc:  # noqa: BLE001 - handed to the control thread, which raises it
                error = exc
            self.outbox.put((request, reply, time.monotonic(), error))


def run_realtime(loop: ControlLoop) -> None:
    """Run ``loop`` on the wall clock (``loop.config.mode`` "async" or "hold"); fills ``loop.report``."""
    cfg, report = loop.config, loop.report
    assert cfg.control_hz is not None
    period = 1.0 / cfg.control_hz
    overlap = cfg.mode == "async"
    started = time.monotonic()
    next_tick = started

    def tick() -> None:
        """Wait for the next control tick; a late one is counted, not caught up in a burst."""
        nonlocal next_tick
        now = time.monotonic()
        if now < next_tick:
            time.sleep(next_tick - now)
        else:
            report.overruns += now - next_tick > period / 2
            next_tick = now
        next_tick += period

    def out_of_time() -> bool:
        return cfg.max_seconds is not None and time.monotonic() - started >= cfg.max_seconds

    hold = getattr(loop.robot, "hold", None)  # optional: stand still for one tick (a sim steps with no motion)
    planner = _Planner(loop)
    planner.start()
    plan: _Plan | None = None
    waiting: _Plan | None = None  # an early reply, for its start step
    in_flight: _Request | None = None
    frameskip = 0
    t = 0
    latencies: list[float] = []
    try:
        while report.model_steps < cfg.model_steps and not out_of_time():
            # A model-step boundary: take a reply, switch plans, send the next request.
            if in_flight is not None:
                try:
                    request, reply, arrived, error = planner.outbox.get_nowait()
                except queue.Empty:
                    pass
                else:
                    in_flight = None
                    if error is not None:
                        raise error
                    latencies.append(arrived - request.sent_at)
                    if reply is not None:
                        actions = plan_actions(reply)
                        frameskip = actions.shape[1]
                        start = request.t0 + request.pending if cfg.compensate and overlap else t
                        late = t - start
                        if late >= len(actions):  # nothing of it is still ahead (cannot happen: see above)
                            report.stale_plans += 1
                        elif late > 0:
                            report.late_plans += 1
                            report.late_steps += late
                            plan = _Plan(actions, start)
                        elif late == 0:
                            plan = _Plan(actions, start)
                        else:
                            waiting = _Plan(actions, start)
                    else:
                        report.skipped_frames += 1
            if waiting is not None and t >= waiting.start:
                plan, waiting = waiting, None
            if in_flight is None and waiting is None and (overlap or plan is None or _due(plan, t, cfg.execute)):
                frame, proprio = loop.read_frame(), loop.robot.proprio()
                k = 0
                if overlap and cfg.compensate and plan is not None and frameskip:
                    k = min(plan.left(t), pending_steps(latencies, cfg.control_hz, frameskip, cfg.latency_margin,
                                                        cfg.latency_window))
                pending = None
                if k:
                    i = t - plan.start  # type: ignore[union-attr]
                    rows = plan.actions[i:i + k]  # type: ignore[union-attr]  # (k, frameskip, A)
                    pending = rows.reshape(-1, rows.shape[-1])  # (k * frameskip, A)
                executed = 0 if plan is None else min(t - plan.start, len(plan.actions))
                in_flight = _Request(t, k, time.monotonic())
                report.pending_steps.append(k)
                planner.inbox.put((in_flight, frame, proprio, executed, pending))
            # Execute one model step of the plan, or hold still for one tick.
            if plan is not None and plan.left(t) > 0 and (overlap or in_flight is None):
                for a in plan.actions[t - plan.start]:
                    tick()
                    loop.robot.apply(a)
                    loop.step()
                    report.env_actions += 1
                t += 1
                report.model_steps += 1
                if loop.until is not None and loop.until():
                    report.done = True
                    break
            else:
                tick()
                if hold is not None:
                    hold()
                loop.step()
                report.hold_ticks += 1
    finally:
        planner.inbox.put(None)
        report.wall_s = time.monotonic() - started
        planner.join(timeout=max(5.0, 10 * (max(latencies) if latencies else 1.0)))


def _due(plan: _Plan, t: int, execute: int) -> bool:
    """Hold mode: replan after ``execute`` model steps of the plan (or when it has none left)."""
    return t - plan.start >= execute or plan.left(t) == 0
