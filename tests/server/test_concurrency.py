"""Concurrent sessions get their own plans; model work never blocks the event loop."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tests.server.conftest import GOAL_PROPRIO, PROPRIO, frame
from wm_client import PlanningClient

WORKERS = 4
STEPS = 3


def episode(url: str, worker: int) -> list[tuple[list, list]]:
    """plan + replans for one worker's own goal; returns (actions, loss_trace) per call."""
    out = []
    with PlanningClient(url, use_msgpack=worker % 2 == 0) as c:
        reply = c.plan(frame(100 + worker), frame(200 + worker), PROPRIO, GOAL_PROPRIO, seed=worker)
        out.append((reply["actions"], reply["loss_trace"]))
        for step in range(STEPS):
            reply = c.replan(reply["session_id"], frame(300 + 10 * worker + step), PROPRIO,
                             executed_steps=1 + step % 2, seed=step)
            out.append((reply["actions"], reply["loss_trace"]))
        c.delete_session(reply["session_id"])
    return out


def test_concurrent_sessions_match_their_sequential_runs(server_url):
    sequential = [episode(server_url, w) for w in range(WORKERS)]
    barrier = threading.Barrier(WORKERS)

    def run(w: int) -> list[tuple[list, list]]:
        barrier.wait()
        return episode(server_url, w)

    with ThreadPoolExecutor(WORKERS) as pool:
        concurrent = list(pool.map(run, range(WORKERS)))
    for w in range(WORKERS):
        assert concurrent[w] == sequential[w], f"worker {w} saw another session's state"
    # Different goals give different plans, so the comparison above can tell them apart.
    assert len({str(s[0][1]) for s in sequential}) == WORKERS


def test_health_answers_while_a_long_plan_runs(server_url):
    result: dict = {}

    def long_plan() -> None:
        with PlanningClient(server_url) as c:
            result["reply"] = c.plan(
                frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=0, deadline_ms=1500,
                planner={"cem": {"samples": 2048, "elites": 8}, "max_iterations": 100, "min_iterations": 100},
            )

    thread = threading.Thread(target=long_plan)
    thread.start()
    time.sleep(0.3)  # the plan is on the model thread by now
    latencies = []
    with PlanningClient(server_url) as c:
        for _ in range(5):
            started = time.monotonic()
            assert c.health()["status"] == "ok"
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)
    thread.join(timeout=30)
    assert result["reply"]["stop_reason"] == "deadline"
    assert result["reply"]["timing_ms"]["total"] < 3000
    assert max(latencies) < 0.5, latencies
