"""A real Ray Serve deployment with 2 replicas on 127.0.0.1: any replica serves any step of an
episode, and a replica killed mid-episode loses no step.

Ray starts a local cluster bound to loopback (`python -m server.ray`, a subprocess with its own
process group); the episodes run the project's control loop in stateless mode on the built-in wall
environment with the shipped default model.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="Ray Serve is the 'ray' extra (make test installs it)")

from client_examples.client import PlanningClient  # noqa: E402
from client_examples.closed_loop import make_tasks  # noqa: E402
from client_examples.control_loop import ControlLoop, LoopConfig  # noqa: E402
from envs import WallEnv, is_success  # noqa: E402
from models import DEFAULT_MODEL_PATH  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _replica_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "ServeReplica:planner"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.fixture(scope="module")
def ray_url() -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WM_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.ray", "--replicas", "2", "--model", str(DEFAULT_MODEL_PATH),
         "--port", str(port), "--device", "cpu", "--torch-threads", "1", "--num-cpus", "0.5",
         "--health-check-period-s", "1", "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        with PlanningClient(url, timeout=10) as c:
            deadline = time.monotonic() + 240
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"server.ray exited: {proc.stdout.read() if proc.stdout else ''}")
                try:
                    if c.health()["status"] == "ok" and len(_replica_pids()) >= 2:
                        break
                except Exception:  # noqa: BLE001 - not up yet
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("Ray Serve did not start two replicas within 240 s")
                time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True,
                       timeout=60, env=env)


class WallCamera:
    def __init__(self, env: WallEnv) -> None:
        self.env = env

    def read(self) -> np.ndarray:
        return self.env.render()


class WallRobot:
    """Applies env actions and counts them: the ground truth for lost or repeated steps."""

    def __init__(self, env: WallEnv) -> None:
        self.env, self.applied = env, 0

    def proprio(self) -> np.ndarray:
        return self.env.proprio()

    def apply(self, action: np.ndarray) -> None:
        self.env.step(action)
        self.applied += 1


def episode(url: str, start: np.ndarray, goal: np.ndarray, seed: int, model_steps: int = 10,
            between_steps: float = 0.0) -> tuple[bool, ControlLoop, WallRobot]:
    env = WallEnv()
    goal_obs = env.reset(state=goal)
    env.reset(state=start)
    robot = WallRobot(env)

    def step() -> None:
        if between_steps:
            time.sleep(between_steps)

    with PlanningClient(url, timeout=60) as client:
        loop = ControlLoop(client, WallCamera(env), robot, step=step, goal_frame=goal_obs["visual"],
                           goal_proprio=goal_obs["proprio"],
                           config=LoopConfig(model_steps=model_steps, stateless=True, seed=seed,
                                             request_retries=6, retry_backoff_s=0.5),
                           until=lambda: is_success(env.get_state(), goal))
        loop.run()
    return is_success(env.get_state(), goal), loop, robot


def test_consecutive_replans_are_served_by_different_replicas_and_the_episode_succeeds(ray_url):
    env = WallEnv()
    tasks = make_tasks("near", 3, seed=11, env=env, frameskip=5)
    served: Counter[str] = Counter()
    successes = 0
    for i, (start, goal) in enumerate(tasks):
        ok, loop, robot = episode(ray_url, start, goal, seed=i)
        successes += ok
        served.update(loop.report.served_by)
        assert robot.applied == loop.report.env_actions == 5 * loop.report.model_steps
    assert len(served) >= 2, served  # steps of these episodes were served by both replicas
    assert successes >= 2, successes


def test_a_replica_killed_mid_episode_loses_no_step(ray_url):
    env = WallEnv()
    tasks = make_tasks("near", 4, seed=23, env=env, frameskip=5)
    results: list[tuple[bool, ControlLoop, WallRobot] | BaseException] = [None] * len(tasks)  # type: ignore[list-item]

    def run(i: int) -> None:
        try:
            start, goal = tasks[i]
            results[i] = episode(ray_url, start, goal, seed=100 + i, model_steps=8, between_steps=0.05)
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(tasks))]
    for t in threads:
        t.start()
    time.sleep(2.0)  # the episodes are under way
    victim = _replica_pids()[0]
    os.kill(victim, signal.SIGKILL)
    for t in threads:
        t.join(timeout=300)
    for r in results:
        assert not isinstance(r, BaseException), repr(r)
        ok, loop, robot = r
        report = loop.report
        # Every model step executed once: what the robot applied is exactly what the loop counted,
        # and the episode either reached its goal or used its whole budget.
        assert robot.applied == report.env_actions == 5 * report.model_steps
        assert ok or report.model_steps == 8
    # The killed replica is replaced.
    deadline = time.monotonic() + 120
    while len(_replica_pids()) < 2 or victim in _replica_pids():
        assert time.monotonic() < deadline, "Ray did not replace the killed replica"
        time.sleep(1)
