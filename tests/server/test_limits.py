"""The locked-down server: API key, body limit, session count and TTL, reject resize."""

from __future__ import annotations

import time

import httpx
import msgpack
import pytest

from tests.server.conftest import API_KEY, GOAL_PROPRIO, PROPRIO, frame
from wm_client import PlanningClient, PlanningError


@pytest.fixture
def strict(strict_url):
    with PlanningClient(strict_url, api_key=API_KEY) as c:
        yield c


def test_health_needs_no_key(strict_url):
    r = httpx.get(strict_url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


@pytest.mark.parametrize(
    "method, path", [("GET", "/stats"), ("GET", "/metrics"), ("GET", "/openapi.json"),
                     ("POST", "/plan"), ("POST", "/replan"), ("DELETE", "/sessions/abc")],
)
def test_everything_else_needs_the_key(strict_url, method, path):
    r = httpx.request(method, strict_url + path, content=b"{}",
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "auth.missing"
    assert r.headers["www-authenticate"] == "Bearer"
    for header in ("Bearer wrong-key", "Basic dXNlcjpwYXNz", "Bearer", API_KEY):
        r = httpx.request(method, strict_url + path, headers={"Authorization": header})
        assert r.status_code == 401, header
        assert r.json()["error"]["code"] == "auth.invalid", header


def test_the_right_key_is_accepted(strict, strict_url):
    assert strict.stats()["status"] == "ok"
    with PlanningClient(strict_url, api_key="nope") as bad:
        with pytest.raises(PlanningError) as info:
            bad.stats()
    assert info.value.status == 401


def test_body_over_the_limit_is_413_before_reading_it(strict_url):
    big = msgpack.packb({"obs": {"format": "raw", "data": b"\0" * 200_000}}, use_bin_type=True)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/msgpack"}
    r = httpx.post(strict_url + "/plan", content=big, headers=headers)
    assert r.status_code == 413
    assert msgpack.unpackb(r.content)["error"]["code"] == "request.too_large"


def test_chunked_body_over_the_limit_is_413(strict_url):
    def chunks():
        for _ in range(20):
            yield b"\0" * 8192  # no Content-Length: the server counts while reading

    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    r = httpx.post(strict_url + "/plan", content=chunks(), headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request.too_large"


def test_auth_is_checked_before_the_body(strict_url):
    r = httpx.post(strict_url + "/plan", content=b"\0" * 200_000,
                   headers={"Content-Type": "application/msgpack"})
    assert r.status_code == 401  # auth is checked before the body


def test_planner_overrides_are_bounded_by_this_servers_limits(strict):
    with pytest.raises(PlanningError) as info:
        strict.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, planner={"cem": {"samples": 65, "elites": 2}})
    assert (info.value.status, info.value.code, info.value.field) == (
        422, "planner.out_of_bounds", "planner.cem.samples")
    assert "64" in info.value.message
    reply = strict.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, planner={"cem": {"samples": 64}})
    assert reply["stop_reason"] in {"converged", "max_iterations"}


def test_reject_policy_refuses_other_sizes(strict):
    with pytest.raises(PlanningError) as info:
        strict.plan(frame(1, size=48), frame(2), PROPRIO, GOAL_PROPRIO)
    assert (info.value.code, info.value.field) == ("image.wrong_size", "obs")
    assert "32x32" in info.value.message


def test_pixel_limit(strict):
    with pytest.raises(PlanningError) as info:
        strict.plan(frame(1, size=80), frame(2), PROPRIO, GOAL_PROPRIO)  # 6400 > 64 * 64
    assert info.value.code == "image.too_large"


def test_least_recently_used_session_is_evicted_then_idle_ones_expire(strict):
    ids = [strict.plan(frame(i), frame(9), PROPRIO, GOAL_PROPRIO, seed=0)["session_id"]
           for i in range(3)]
    with pytest.raises(PlanningError) as info:  # max_sessions=2: the first went
        strict.replan(ids[0], frame(5), PROPRIO)
    assert (info.value.status, info.value.code) == (404, "session.not_found")
    assert "evicted" in info.value.message
    assert strict.replan(ids[1], frame(5), PROPRIO)["warm_start"] is True
    stats = strict.stats()["sessions"]
    assert stats["active"] == 2 and stats["evicted"] >= 1

    time.sleep(1.7)  # session_ttl_s=1.5
    with pytest.raises(PlanningError) as info:
        strict.replan(ids[2], frame(5), PROPRIO)
    assert info.value.code == "session.not_found" and "expired" in info.value.message
    assert strict.stats()["sessions"]["active"] == 0
