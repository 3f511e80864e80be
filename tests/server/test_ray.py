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

from envs import WallEnv, is_success  # noqa: E402
from envs.episodes import SimAdapter  # noqa: E402
from envs.tasks import wall_tasks as make_tasks  # noqa: E402
from wm_client import ControlLoop, LoopConfig, PlanningClient  # noqa: E402
from models import DEFAULT_MODEL_PATH  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the
    pid, an identity that a recycled pid does not share. None when the pid is not running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3
    return None if fields[0] in "ZX" else fields[19]  # a zombie has died; only its parent's reaping waits


def _gone(pid: int, start_time: str | None) -> bool:
    """The process that had `pid` and `start_time` has died (exited, killed or a zombie not yet
    reaped by its parent, Ray's raylet); another process may have the pid since."""
    if Path("/proc/self/stat").exists():
        now = _start_time(pid)
        return now is None or now != start_time
    try:
        os.kill(pid, 0)  # no /proc: a zombie still counts as alive here
    except ProcessLookupError:
        return True
    return False


def _wait_gone(pid: int, start_time: str | None, timeout: float) -> float:
    """Seconds until the process died; fails the test after `timeout`."""
    t0 = time.monotonic()
    while not _gone(pid, start_time):
        assert time.monotonic() - t0 < timeout, f"replica process {pid} still running {timeout} s after SIGKILL"
        time.sleep(0.05)
    return time.monotonic() - t0


REPLICAS: dict[str, int] = {}  # replica name -> pid, from /health (this fixture's replicas only)


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
            ready: set[str] = set()
            while len(ready) < 2:  # both replicas have loaded their model and answer
                if proc.poll() is not None:
                    pytest.fail(f"server.ray exited: {proc.stdout.read() if proc.stdout else ''}")
                try:
                    health = c.health()
                    if health["status"] == "ok":
                        ready.add(health["replica"])
                        REPLICAS[health["replica"]] = health["pid"]
                except Exception:  # noqa: BLE001 - not up yet
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"Ray Serve did not start two ready replicas within 240 s (ready: {ready})")
                time.sleep(0.2)
        yield url
    finally:
        # The local cluster belongs to server.ray's process group (its own session): stop that
        # group only, never `ray stop`, which would end every Ray process on the machine.
        for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue


class WallRobot(SimAdapter):
    """The shared env adapter (camera and robot), counting env actions: the ground truth for lost or
    repeated steps."""

    def __init__(self, env: WallEnv) -> None:
        super().__init__(env)
        self.applied = 0

    def apply(self, action: np.ndarray) -> None:
        super().apply(action)
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
        loop = ControlLoop(client, robot, robot, step=step, goal_frame=goal_obs["visual"],
                           goal_proprio=goal_obs["proprio"],
                           config=LoopConfig(model_steps=model_steps, stateless=True, seed=seed,
                                             request_retries=6, retry_backoff_s=0.5),
                           until=lambda: is_success(env.get_state(), goal))
        loop.run()
    return is_success(env.get_state(), goal), loop, robot


def test_consecutive_replans_are_served_by_different_replicas_and_the_episode_succeeds(ray_url):
    env = WallEnv()
    tasks = make_tasks("near", 5, seed=11, env=env, frameskip=5)
    served: Counter[str] = Counter()
    successes = 0
    for i, (start, goal) in enumerate(tasks):
        ok, loop, robot = episode(ray_url, start, goal, seed=i)
        successes += ok
        served.update(loop.report.served_by)
        assert robot.applied == loop.report.env_actions == 5 * loop.report.model_steps
    assert len(served) >= 2, served  # steps of these episodes were served by both replicas
    assert successes >= 4, successes


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

    victim_name, victim = next(iter(REPLICAS.items()))
    survivor_name = next(name for name in REPLICAS if name != victim_name)
    victim_start = _start_time(victim)
    assert not _gone(victim, victim_start), f"replica {victim_name} (pid {victim}) is not running before the kill"
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(tasks))]
    for t in threads:
        t.start()
    time.sleep(2.0)  # the episodes are under way
    os.kill(victim, signal.SIGKILL)
    # Dead within seconds: no longer running (gone, or a zombie that Ray's raylet reaps later).
    _wait_gone(victim, victim_start, timeout=30)
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "an episode did not finish within 300 s"
    for r in results:
        assert not isinstance(r, BaseException), repr(r)
        ok, loop, robot = r
        report = loop.report
        # Every model step executed once: what the robot applied is exactly what the loop counted,
        # and the episode either reached its goal or used its whole budget.
        assert robot.applied == report.env_actions == 5 * report.model_steps
        assert ok or report.model_steps == 8
    # The killed replica is replaced: a new replica, in a live process of its own, reports
    # ready through the deployment's /health beside the survivor, and the dead one never answers.
    deadline = time.monotonic() + 120
    seen: dict[str, int] = {}
    with PlanningClient(ray_url, timeout=10) as c:
        while not (set(seen) - {victim_name, survivor_name} and survivor_name in seen):
            assert time.monotonic() < deadline, f"Ray did not replace the killed replica (answering: {seen})"
            try:
                health = c.health()
                if health["status"] == "ok":
                    seen[health["replica"]] = health["pid"]
            except Exception:  # noqa: BLE001 - the proxy may still route to the dead one
                pass
            time.sleep(0.2)
    assert victim_name not in seen, f"the killed replica {victim_name} answered /health"
    (new_name, new_pid), = ((n, p) for n, p in seen.items() if n not in (victim_name, survivor_name))
    assert new_pid != victim and not _gone(new_pid, _start_time(new_pid)), (new_name, new_pid)
