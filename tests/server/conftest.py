"""Real servers for the tests: uvicorn on a free localhost port, in a thread.

A tiny random model is saved once per session; each server loads it from the
file exactly as ``python -m server --model`` would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn

from models.testing import save_tiny_model
from server.app import create_app
from server.http import uvicorn_config
from server.settings import Settings
from wm_client import PlanningClient

API_KEY = "test-key-1234"
IMAGE_SIZE = 32  # models.testing.TINY_CONFIG
ACTION_BOUND = 3.0
# Small enough for a 2-core CPU: a plan takes a few tens of ms.
FAST_PLANNER = {"max_iterations": 4, "min_iterations": 2, "patience": 2, "cem": {"samples": 24, "elites": 4},
                "icem": {"samples": 24, "elites": 4}, "mppi": {"samples": 24}}


@contextmanager
def running_server(settings: Settings) -> Iterator[str]:
    """Serve ``settings`` on 127.0.0.1 in a background thread; yields the base URL."""
    app = create_app(settings)
    server = uvicorn.Server(uvicorn_config(app, settings, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def settings_for(model_path: Path, **overrides: Any) -> Settings:
    # One torch thread: the test machine's cores are shared, and oversubscribed
    # OpenMP threads turn a 20 ms plan into seconds.
    values: dict[str, Any] = {
        "model": model_path, "planner": FAST_PLANNER, "port": 0, "torch_threads": 1,
        "device": "cpu",  # the tests compare with plans computed in-process on the CPU
        # FAST_PLANNER is a tiny default plan: cost limits in its multiples would refuse the tests'
        # own larger overrides. tests/server/test_admission.py sets them deliberately.
        "max_plan_cost": 1e5, "max_queued_cost": 1e6,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bounds = {"action_low": [-ACTION_BOUND] * 2, "action_high": [ACTION_BOUND] * 2}
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt", seed=0, **bounds)


@pytest.fixture(scope="session")
def server_url(model_path: Path) -> Iterator[str]:
    """The default server: no auth, generous limits, resize policy 'resize'."""
    with running_server(settings_for(model_path)) as url:
        PlanningClient(url).wait_ready(timeout=60)
        yield url


@pytest.fixture(scope="session")
def strict_url(model_path: Path) -> Iterator[str]:
    """A locked-down server: API key, small body limit, 2 sessions, short TTL, reject resize."""
    settings = settings_for(
        model_path,
        api_key=API_KEY,
        max_body_bytes=64 * 1024,
        max_sessions=2,
        session_ttl_s=1.5,
        resize_policy="reject",
        max_num_samples=64,
        max_horizon=8,
        max_image_pixels=64 * 64,
    )
    with running_server(settings) as url:
        PlanningClient(url).wait_ready(timeout=60)
        yield url


@pytest.fixture(params=[True, False], ids=["msgpack", "json"])
def client(request: pytest.FixtureRequest, server_url: str) -> Iterator[PlanningClient]:
    with PlanningClient(server_url, use_msgpack=request.param) as c:
        yield c


@pytest.fixture
def mp_client(server_url: str) -> Iterator[PlanningClient]:
    with PlanningClient(server_url, use_msgpack=True) as c:
        yield c


@pytest.fixture
def json_client(server_url: str) -> Iterator[PlanningClient]:
    with PlanningClient(server_url, use_msgpack=False) as c:
        yield c


def frame(seed: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """A random RGB frame (size, size, 3) uint8."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


PROPRIO = [1.0, -2.0]
GOAL_PROPRIO = [4.0, 0.5]
