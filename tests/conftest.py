"""Shared fixtures. Tests run on the CPU with tiny models; nothing is downloaded.

WM_TEST_DEVICE=cuda (scripts/device_check.sh) puts the models of tests that take
the `test_device` fixture on that device; the default is the CPU.
"""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
TEST_DEVICE = os.environ.get("WM_TEST_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def _no_operator_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see the server's own defaults, not the WM_* settings of the shell or
    container they run in (the Docker image sets WM_HOST, WM_PORT, WM_DEVICE, WM_MODEL)."""
    for name in [k for k in os.environ if k.startswith("WM_") and k != "WM_TEST_DEVICE"]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def test_device() -> torch.device:
    device = torch.device(TEST_DEVICE)
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.exit(f"WM_TEST_DEVICE={TEST_DEVICE} but CUDA is not available", returncode=2)
    return device
