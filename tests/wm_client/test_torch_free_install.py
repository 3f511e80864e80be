"""``pip install ./clients/python`` into a fresh venv without torch, then plan against a real server.

This is what a simulator's Python (Isaac Sim's ``./python.sh``) gets: the
package and its four dependencies, nothing of the server. The venv is built
with ``python -m venv`` and pip (pip's cache and the configured index; about
half a minute); the server is ``python -m server`` started with the
project's interpreter on 127.0.0.1, twice (two replicas sharing a token
secret); a script run by the venv's interpreter plans, replans by session
and by ``mpc_state`` token across the two (the second asks for the goal and
the client resends it) and runs the control loop. ``CLIENT_TEST_PYTHON=/path/to/python3.10``
builds the venv from another interpreter (the default: the one running the
tests; Isaac Sim 4.x ships 3.10). Marked ``pip_install``
(``pytest -m "not pip_install"`` leaves it out); it skips, with pip's words,
when the package index cannot be reached.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.server.conftest import FAST_PLANNER, GOAL_PROPRIO, IMAGE_SIZE, PROPRIO, frame
from wm_client import PlanningClient

pytestmark = pytest.mark.pip_install

ROOT = Path(__file__).resolve().parents[2]
# What must not come with the client: torch and the server's stack, and the project itself.
ABSENT = ["torch", "fastapi", "uvicorn", "starlette", "pydantic", "models", "planning", "server", "client_examples"]

# Run by the torch-free venv's interpreter: argv = url, other replica's url, planner JSON, image size,
# modules that must be absent. Prints one JSON line.
SCRIPT = textwrap.dedent('''
    import importlib.util, json, sys
    import numpy as np
    import wm_client
    from wm_client import ControlLoop, LoopConfig, PlanningClient, PlanningError

    url, other, planner, size = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    frame = lambda seed: np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = {"wm_client": wm_client.__file__, "python": sys.version.split()[0],
           "present": [m for m in sys.argv[5].split(",") if importlib.util.find_spec(m) is not None]}
    with PlanningClient(url) as client:
        client.wait_ready(timeout=60)
        first = client.plan(frame(1), frame(99), proprio=[1.0, -2.0], goal_proprio=[4.0, 0.5], seed=7,
                            planner=planner)
        second = client.replan(first["session_id"], frame(2), proprio=[1.5, -1.5], executed_steps=1, seed=8)
        client.delete_session(first["session_id"])
        try:
            client.replan(first["session_id"], frame(3), proprio=[1.5, -1.5])
        except PlanningError as exc:
            out["after_delete"] = [exc.status, exc.code]
        with PlanningClient(url, use_msgpack=False) as json_client:
            out["json_actions"] = json_client.plan(frame(1), frame(99), proprio=[1.0, -2.0],
                                                   goal_proprio=[4.0, 0.5], seed=7, planner=planner)["actions"]

        # Stateless: the token alone carries the warm start; each step may land on either replica.
        goal = dict(goal=frame(99), goal_proprio=[4.0, 0.5])
        with PlanningClient(other) as replica_b:
            hop = [client.plan(frame(20), goal["goal"], proprio=[1.0, -2.0], goal_proprio=[4.0, 0.5], seed=3,
                               planner=planner)]
            for step, (c, seed) in enumerate([(replica_b, 4), (client, 5), (replica_b, 6)]):
                hop.append(c.replan(None, frame(21 + step), proprio=[1.0, -2.0], mpc_state=hop[-1]["mpc_state"],
                                    seed=seed, **goal))
        out["stateless"] = [[r["served_by"], r["warm_start"]] for r in hop]

        class Camera:
            def __init__(self):
                self.reads = 0
            def read(self):
                self.reads += 1
                return np.empty((0,), np.uint8) if self.reads == 1 else frame(10 + self.reads)

        class Robot:
            def __init__(self):
                self.q, self.applied = np.array([1.0, -2.0]), 0
            def proprio(self):
                return self.q.copy()
            def apply(self, action):
                self.q, self.applied = self.q + action, self.applied + 1

        robot = Robot()
        loop = ControlLoop(client, Camera(), robot, step=lambda: None, goal_frame=frame(99),
                           goal_proprio=[4.0, 0.5], config=LoopConfig(model_steps=3, planner=planner,
                                                                      stateless=True))
        report = loop.run()
        loop.close()
    out.update(plan_actions=first["actions"], horizon=first["horizon"], frameskip=first["frameskip"], warm=[first["warm_start"],
               second["warm_start"]], replan_shape=np.asarray(second["actions"]).shape,
               loop=dict(model_steps=report.model_steps, plans=report.plans, replans=report.replans,
                         env_actions=report.env_actions, applied=robot.applied, empty=report.empty_frames,
                         errors=dict(report.errors), served_by=dict(report.served_by)))
    print(json.dumps(out))
''')


def _env() -> dict[str, str]:
    """The caller's environment without anything that would put the project on sys.path."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("WM_")}


def _run(cmd: list[str], timeout: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only ``clients/python`` installed (not editable: the files pip really ships)."""
    tmp = tmp_path_factory.mktemp("torch-free")
    venv = tmp / "venv"
    base = os.environ.get("CLIENT_TEST_PYTHON", sys.executable)
    made = _run([base, "-m", "venv", str(venv)], 120, tmp)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    # A copy, so that pip's in-tree build leaves nothing in the checkout.
    source = shutil.copytree(ROOT / "clients" / "python", tmp / "client-src",
                             ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    installed = _run([*pip, str(source)], 300, tmp)
    if installed.returncode != 0:
        # Offline, or a broken package? A download of one small dependency tells them apart.
        probe = _run([str(python), "-m", "pip", "download", "--no-deps", "--dest", str(tmp / "probe"), "msgpack"],
                     120, tmp)
        if probe.returncode != 0:
            pytest.skip(f"pip cannot reach the package index, so the client cannot be installed: "
                        f"{probe.stderr.strip()[-300:]}")
        pytest.fail(f"pip install ./clients/python failed while the index is reachable:\n{installed.stderr[-3000:]}")
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def servers(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two ``python -m server`` processes (replicas "a" and "b", one token secret) with the
    project's interpreter (torch) on 127.0.0.1: name -> URL."""
    logs = tmp_path_factory.mktemp("server-logs")
    env = {**_env(), "PYTHONPATH": str(ROOT)}
    procs, urls = {}, {}
    for name in ("a", "b"):
        port = _free_port()
        with (logs / f"{name}.log").open("w") as out:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "server", "--model", str(model_path), "--port", str(port),
                 "--torch-threads", "1", "--device", "cpu", "--replica-name", name,
                 "--token-secret", "torch-free-test"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        urls[name] = f"http://127.0.0.1:{port}"
    try:
        for name, url in urls.items():
            with PlanningClient(url) as client:
                try:
                    client.wait_ready(timeout=120)
                except TimeoutError as exc:
                    pytest.fail(f"{exc}; server {name}'s log:\n{(logs / f'{name}.log').read_text()[-3000:]}")
        yield urls
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_the_client_installs_without_torch_and_plans_against_a_real_server(
        venv_python: Path, servers: dict[str, str], tmp_path: Path) -> None:
    server = servers["a"]
    with PlanningClient(servers["b"]) as b:
        asked_before = b.stats()["errors_by_code"].get("mpc_state.goal_unknown", 0)
    script = tmp_path / "torch_free_client.py"
    script.write_text(SCRIPT)
    # cwd is a bare temporary directory: nothing of the checkout is importable from there.
    result = _run([str(venv_python), str(script), server, servers["b"], json.dumps(FAST_PLANNER), str(IMAGE_SIZE),
                   ",".join(ABSENT)], 120, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])

    venv = venv_python.parent.parent
    assert Path(out["wm_client"]).resolve().is_relative_to(venv.resolve())  # the installed copy
    assert out["present"] == []  # no torch, no server stack, no project packages

    actions = np.asarray(out["plan_actions"])
    assert actions.shape == (out["horizon"] * out["frameskip"], 2) and np.isfinite(actions).all()
    assert out["replan_shape"] == list(actions.shape) and out["warm"] == [False, True]
    assert out["after_delete"] == [404, "session.not_found"]
    # msgpack from the torch-free venv, JSON (PNG) from it and the project's own client: one plan.
    np.testing.assert_array_equal(np.asarray(out["json_actions"]), actions)
    with PlanningClient(server) as client:
        here = client.plan(frame(1), frame(99), proprio=PROPRIO, goal_proprio=GOAL_PROPRIO, seed=7,
                           planner=FAST_PLANNER)
    np.testing.assert_array_equal(np.asarray(here["actions"]), actions)

    # Token replans alternate replicas and stay warm; b asked for the goal once, then held it.
    assert out["stateless"] == [["a", False], ["b", True], ["a", True], ["b", True]]
    with PlanningClient(servers["b"]) as b:
        assert b.stats()["errors_by_code"].get("mpc_state.goal_unknown", 0) - asked_before == 1

    loop = out["loop"]  # stateless mode, on replica a
    assert (loop["model_steps"], loop["plans"], loop["replans"]) == (3, 1, 2)
    assert loop["env_actions"] == loop["applied"] == 3 * out["frameskip"]
    assert loop["empty"] == 1 and loop["errors"] == {} and loop["served_by"] == {"a": 3}
