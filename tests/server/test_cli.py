"""``python -m server`` as an operator runs it: the default model, clear errors, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


from models import DEFAULT_MODEL_PATH
from tests.server.conftest import GOAL_PROPRIO, PROPRIO, frame
from wm_client import PlanningClient

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WM_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_missing_model_is_a_clear_error(tmp_path):
    result = _run("--model", str(tmp_path / "nope.pt"))
    assert result.returncode == 2
    assert "no model artifact at" in result.stderr and "random weights" in result.stderr


def test_without_model_flag_it_serves_the_shipped_default_with_its_planner_defaults():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "server", "--port", str(port), "--torch-threads", "1"],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with PlanningClient(f"http://127.0.0.1:{port}") as c:
            health = c.wait_ready(timeout=60)
            assert health["model"]["name"] == "wall-default" and health["eval_mode"] is True
            defaults = c.stats()["planner_defaults"]
            assert (defaults["objective"], defaults["alpha"]) == ("all", 10.0)  # the model's recommendation
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert DEFAULT_MODEL_PATH.is_file()


def test_unreadable_artifact_stops_the_server(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"definitely not a torch file")
    result = _run("--model", str(bad), "--port", str(_free_port()))
    assert result.returncode == 1
    assert "ArtifactError" in result.stderr


def test_invalid_setting_is_refused(model_path):
    result = _run("--max-sessions", "0")
    assert result.returncode == 2 and "max_sessions" in result.stderr
    result = _run("--model", str(model_path), "--device", "tpu:9")
    assert result.returncode == 2 and "invalid --device" in result.stderr


def test_serves_a_model_and_stops_on_sigterm(model_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--model", str(model_path), "--port", str(port),
         "--torch-threads", "1", "--device", "cpu", "--planner.cem.samples", "16", "--planner.cem.elites", "4"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        with PlanningClient(f"http://127.0.0.1:{port}") as c:
            health = c.wait_ready(timeout=60)
            assert health["model"]["name"] == "tiny-random"
            reply = c.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=0)
            assert len(reply["actions"]) == reply["horizon"] * reply["frameskip"]
            assert c.stats()["planner_defaults"]["cem"]["samples"] == 16
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal for the exit status.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert f"127.0.0.1:{port}" in output


def test_sigterm_during_a_long_plan_exits_within_the_grace_period(model_path):
    """In-flight plans get --shutdown-grace-s, then are cancelled; the process exits without SIGKILL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--model", str(model_path), "--port", str(port), "--torch-threads", "1",
         "--device", "cpu", "--shutdown-grace-s", "1", "--max-plan-cost", "1e9", "--max-queued-cost", "1e9"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    outcome: dict[str, object] = {}

    def long_plan() -> None:
        with PlanningClient(f"http://127.0.0.1:{port}", timeout=120) as c:
            try:  # thousands of iterations: minutes if nothing stopped it
                outcome["reply"] = c.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=0,
                                          planner={"cem": {"samples": 4096}, "max_iterations": 100, "min_iterations": 100,
                                                   "horizon": 32})
            except Exception as exc:  # noqa: BLE001 - any outcome but a hang will do
                outcome["error"] = exc

    try:
        PlanningClient(f"http://127.0.0.1:{port}").wait_ready(timeout=60)
        thread = threading.Thread(target=long_plan)
        thread.start()
        time.sleep(1.5)  # the plan is running
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        exited_after = time.monotonic() - sent
        thread.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert exited_after < 10, exited_after
    assert "error" in outcome and "reply" not in outcome
