"""The real-time loop (``LoopConfig(mode="async")``): actions at a fixed rate while the next plan is
computed, switched at the step each plan was made for, late plans aligned in time."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from tests.client_examples.test_control_loop import FRAMESKIP, FakeCamera, FakeRobot, SpyClient
from tests.server.conftest import GOAL_PROPRIO, frame
from wm_client import ControlLoop, LoopConfig
from wm_client.realtime import pending_steps

H = 12  # model steps per scripted plan


class ScriptedClient:
    """A planner with scripted latencies whose action rows say which plan and step they are:
    row j of plan p is [p, j] (frameskip copies), so the robot's log shows what ran when."""

    def __init__(self, latencies: list[float]) -> None:
        self.latencies = latencies
        self.requests: list[dict[str, Any]] = []

    def _reply(self, **kw: Any) -> dict[str, Any]:
        p = len(self.requests)
        self.requests.append(kw)
        time.sleep(self.latencies[min(p, len(self.latencies) - 1)])
        rows = [[p, j] for j in range(H) for _ in range(FRAMESKIP)]
        return {"actions": rows, "frameskip": FRAMESKIP, "session_id": "s", "mpc_state": "tok", "served_by": "x"}

    def plan(self, obs: Any, goal: Any, proprio: Any, goal_proprio: Any, **kw: Any) -> dict[str, Any]:
        return self._reply(kind="plan", proprio=np.array(proprio), **kw)

    def replan(self, session_id: Any, obs: Any, proprio: Any, executed_steps: int = 1, **kw: Any) -> dict[str, Any]:
        return self._reply(kind="replan", proprio=np.array(proprio), executed_steps=executed_steps, **kw)

    def delete_session(self, session_id: str) -> None:
        pass


def run(client: Any, robot: FakeRobot | None = None, **cfg: Any) -> tuple[ControlLoop, FakeRobot]:
    robot = robot or FakeRobot()
    config = LoopConfig(**{"model_steps": 30, "mode": "async", "control_hz": 100.0, **cfg})
    loop = ControlLoop(client, FakeCamera(frame), robot, step=lambda: None, goal_frame=frame(0),
                       goal_proprio=GOAL_PROPRIO, config=config)
    loop.run()
    return loop, robot


def model_steps(robot: FakeRobot) -> list[tuple[int, int]]:
    """(plan, step) of each executed model step; its frameskip rows must agree."""
    rows = np.stack(robot.applied).astype(int).reshape(-1, FRAMESKIP, 2)
    assert (rows == rows[:, :1]).all()
    return [tuple(r) for r in rows[:, 0]]


def test_pending_steps_cover_the_median_recent_latency_in_whole_model_steps():
    assert pending_steps([], 10.0, 5, 1.25, 5) == 1  # nothing measured: the step in flight
    assert pending_steps([0.3], 10.0, 5, 1.0, 5) == 1  # 3 env steps < one model step of 5
    assert pending_steps([0.9, 0.9, 0.2], 10.0, 5, 1.25, 5) == 3  # 1.125 s = 11.25 env steps -> 3 model steps
    assert pending_steps([0.3, 5.0, 0.3], 10.0, 5, 1.0, 5) == 1  # one slow outlier does not move it
    assert pending_steps([2.0, 0.3], 10.0, 5, 1.0, 1) == 1  # only the last round trip counts


def test_each_plan_runs_from_the_step_it_was_made_for_and_no_step_repeats():
    client = ScriptedClient([0.025])  # 25 ms = 1.25 model steps of 20 ms at 100 Hz, frameskip 2
    loop, robot = run(client)
    steps = model_steps(robot)
    report = loop.report
    assert report.model_steps == len(steps) == 30 and report.replans >= 3
    assert report.late_plans <= 1 and report.overruns <= 2  # 15 ms of slack per reply; a loaded host may use it
    # The pending actions of each request are exactly what the robot executed after its frame,
    # and the reply took over right after them, from its own step 0.
    for p, req in enumerate(client.requests[1:], start=1):
        if (p, 0) not in steps:
            continue  # the run ended before this plan took effect (or, once at most, it came late)
        first = steps.index((p, 0))
        k = len(req["pending_actions"]) // FRAMESKIP
        assert k >= 1
        sent = np.asarray(req["pending_actions"]).astype(int).reshape(k, FRAMESKIP, 2)[:, 0]
        assert [tuple(r) for r in sent] == steps[first - k:first]
    assert sum((p, 0) in steps for p in range(1, len(client.requests))) >= 3
    # Within a plan the steps run in order, one each; a plan never restarts.
    for a, b in zip(steps, steps[1:]):
        assert b == (a[0], a[1] + 1) or (b[0] > a[0])
    assert len(set(steps)) == len(steps)


def test_a_late_plan_is_aligned_in_time_not_restarted():
    # Second replan takes 130 ms where ~25 ms was measured: it arrives ~5 model steps late.
    client = ScriptedClient([0.025, 0.025, 0.025, 0.13, 0.025])
    loop, robot = run(client, model_steps=40)
    steps = model_steps(robot)
    report = loop.report
    assert report.late_plans >= 1 and report.late_steps >= 3
    late = 3
    mine = [s for s in steps if s[0] == late]
    assert mine and mine[0][1] >= 3  # started at the step meant for the moment it arrived, not at 0
    i = steps.index(mine[0])
    before = steps[i - 1]
    assert before[0] < late  # the robot went on with the old plan while the late one was computed
    req = client.requests[late]
    k = len(req["pending_actions"]) // FRAMESKIP
    # No step skipped or repeated on the timeline: the new plan's step j runs at frame step + k + j.
    assert mine[0][1] == (i - steps.index(tuple(np.asarray(req["pending_actions"][0]).astype(int)))) - k
    assert len(set(steps)) == len(steps)
    # The next request's warm start counts those late steps as executed: the server's plan index.
    assert client.requests[late + 1]["executed_steps"] >= mine[0][1]


def test_without_compensation_each_reply_starts_at_step_zero_on_arrival():
    client = ScriptedClient([0.0, 0.025])
    loop, robot = run(client, compensate=False)
    steps = model_steps(robot)
    assert all("pending_actions" not in r for r in client.requests)
    firsts = [s for s in steps if s[1] == 0]
    assert len(firsts) >= 3  # every plan taken from its first step
    assert loop.report.late_plans == 0


class HoldingRobot(FakeRobot):
    """A robot that can be told to stand still for a tick (a simulator steps with no motion)."""

    def __init__(self) -> None:
        super().__init__()
        self.holds = 0

    def hold(self) -> None:
        self.holds += 1


def test_hold_mode_holds_still_while_planning():
    client = ScriptedClient([0.0, 0.03])
    loop, robot = run(client, HoldingRobot(), mode="hold", execute=2, model_steps=8)
    steps = model_steps(robot)
    assert loop.report.hold_ticks >= 3 * 3  # ~3 ticks per 30 ms plan, several plans
    assert robot.holds == loop.report.hold_ticks  # the env advanced on every tick, moving or not
    assert [s[1] for s in steps] == [0, 1] * 4  # execute=2 steps of each plan from its start
    assert all("pending_actions" not in r for r in client.requests)


def test_async_mode_needs_a_control_rate():
    with pytest.raises(ValueError, match="control_hz"):
        LoopConfig(mode="async")


def test_the_async_loop_against_a_real_server_sends_what_the_robot_executes(server_url):
    with SpyClient(server_url) as client:
        loop, robot = run(client, model_steps=12, control_hz=50.0)
        loop.close()
    report = loop.report
    assert report.model_steps == 12 and not report.errors and report.replans >= 2
    applied = np.stack(robot.applied)  # (n, 2)
    # Every compensated reply was planned through exactly the pending steps it was sent with.
    sent = [r["pending_steps"] for r in client.replies]
    assert sent[0] == 0 and all(s >= 1 for s in sent[1:]) and sent == report.pending_steps[:len(sent)]
    # Each reply's actions were executed (those that ran) exactly as planned.
    for r in client.replies:
        rows = np.asarray(r["actions"])
        hits = [i for i in range(len(applied)) if np.allclose(applied[i], rows[0])]
        assert len(hits) <= 1
