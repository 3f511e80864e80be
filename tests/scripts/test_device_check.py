"""scripts/device_check.sh refuses politely where there is no CUDA GPU (the GPU run itself
happens on a GPU machine; its --cpu dry run is in docs/gpu.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "device_check.sh"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_without_a_gpu_it_refuses_and_says_what_to_do(tmp_path):
    out = tmp_path / "check.json"
    r = run("--out", str(out))
    assert r.returncode == 3
    assert "no CUDA GPU here" in r.stderr and "--cpu" in r.stderr
    assert not out.exists()


def test_help_and_bad_arguments():
    assert run("--help").returncode == 0 and "WM_TEST_DEVICE=cuda" in run("--help").stdout
    bad = run("--fast")
    assert bad.returncode == 2 and "unknown argument --fast" in bad.stderr


def test_carried_mode_without_wheels_says_how_to_make_them(tmp_path):
    r = run("--carried", "--cpu", "--wheels", str(tmp_path / "none"), "--out", str(tmp_path / "check.json"))
    assert r.returncode == 4
    assert "scripts/prepare_device_wheels.sh" in r.stderr
    assert not (tmp_path / "check.json").exists()
