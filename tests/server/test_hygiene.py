"""The server under clients that are slow, gone, hostile or too many, against a real uvicorn
server on 127.0.0.1: timeouts, disconnects, label cardinality, auth before routing, a 500
that keeps the connection, admission by cost."""

from __future__ import annotations

import io
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import msgpack
import numpy as np
import pytest
from PIL import Image

from server import service
from tests.server.conftest import API_KEY, GOAL_PROPRIO, PROPRIO, frame, running_server, settings_for
from wm_client import PlanningClient, PlanningError


@pytest.fixture(scope="module")
def tight_url(model_path) -> Iterator[str]:
    """Short timeouts, few connections, the default cost limits, an API key."""
    settings = settings_for(model_path, header_timeout_s=1.0, body_timeout_s=1.0, max_connections=8,
                            api_key=API_KEY, max_plan_cost=25.0, max_queued_cost=300.0)
    with running_server(settings) as url:
        PlanningClient(url, api_key=API_KEY).wait_ready(timeout=60)
        yield url


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _recv_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _body(**overrides: object) -> bytes:
    image = lambda seed: {"format": "raw", "data": frame(seed).tobytes(), "shape": [32, 32, 3],  # noqa: E731
                          "dtype": "uint8"}
    body = {"obs": image(1), "goal": image(2), "proprio": PROPRIO, "goal_proprio": GOAL_PROPRIO, "seed": 0}
    body.update(overrides)
    return msgpack.packb(body, use_bin_type=True)


MSGPACK = {"Content-Type": "application/msgpack"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_slow_request_headers_are_timed_out(tight_url):
    started = time.monotonic()
    with socket.create_connection(_address(tight_url)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        for _ in range(10):  # a header line trickling in every 0.3 s (slowloris)
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
            time.sleep(0.3)
        reply = _recv_all(sock, timeout=5)
    assert reply.startswith(b"HTTP/1.1 408") and b"request.timeout" in reply
    assert time.monotonic() - started < 3.5


def test_a_slow_body_gets_408(tight_url):
    with socket.create_connection(_address(tight_url)) as sock:
        sock.sendall(b"POST /plan HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode()
                     + b"\r\nContent-Type: application/msgpack\r\nContent-Length: 1000\r\n\r\n" + b"\x80" * 10)
        reply = _recv_all(sock, timeout=5)
    assert reply.startswith(b"HTTP/1.1 408") and b"request.timeout" in reply


def test_connections_beyond_the_limit_get_503(tight_url):
    idle = [socket.create_connection(_address(tight_url)) for _ in range(8)]
    try:
        time.sleep(0.2)
        r = httpx.get(tight_url + "/health")
        assert r.status_code == 503
    finally:
        for s in idle:
            s.close()
    time.sleep(0.2)
    assert httpx.get(tight_url + "/health").status_code == 200


def test_unknown_methods_and_paths_need_the_key_and_make_no_new_series(tight_url):
    before = httpx.get(tight_url + "/metrics", headers=AUTH).text
    for i in range(40):
        assert httpx.request(f"X{i:05d}", tight_url + "/stats").status_code == 401
        assert httpx.get(tight_url + f"/nope-{i}").status_code == 401
        assert httpx.request(f"Y{i:05d}", tight_url + "/health").status_code == 405  # /health is public
    assert httpx.get(tight_url + "/nope", headers=AUTH).status_code == 404
    assert httpx.put(tight_url + "/plan", headers=AUTH).status_code == 405
    after = httpx.get(tight_url + "/metrics", headers=AUTH).text
    assert "X000" not in after and "Y000" not in after and "nope" not in after
    series = lambda text: {line.rsplit(" ", 1)[0] for line in text.splitlines()  # noqa: E731
                           if line.startswith("wm_requests_total")}
    new = series(after) - series(before)
    assert len(new) <= 6, new  # (method "other" | GET | PUT) x (path "unmatched" | a route) x status
    assert all('method="other"' in s or "unmatched" in s or 'path="/plan"' in s or 'path="/metrics"' in s
               for s in new), new


def test_a_client_that_leaves_mid_upload_is_no_500(tight_url, caplog):
    caplog.set_level(logging.ERROR)
    body = _body()
    with socket.create_connection(_address(tight_url)) as sock:
        sock.sendall(b"POST /plan HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode()
                     + b"\r\nContent-Type: application/msgpack\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body[:100])
        time.sleep(0.2)
    time.sleep(0.5)
    stats = PlanningClient(tight_url, api_key=API_KEY).stats()
    assert stats["errors_by_code"].get("client.disconnected", 0) >= 1
    assert "internal.error" not in stats["errors_by_code"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith(("server", "uvicorn"))]


def test_a_truncated_jpeg_is_image_corrupt_and_the_connection_lives_on(server_url):
    buf = io.BytesIO()
    Image.fromarray(frame(3)).save(buf, format="JPEG")
    with httpx.Client(base_url=server_url) as c:
        for cut in (300, 100, 20, 4):
            body = _body(obs={"format": "jpeg", "data": buf.getvalue()[:cut]})
            r = c.post("/plan", content=body, headers=MSGPACK)
            assert r.status_code == 422 and msgpack.unpackb(r.content)["error"]["code"] == "image.corrupt", cut
        assert c.post("/plan", content=_body(), headers=MSGPACK).status_code == 200


def test_an_unexpected_failure_is_a_500_in_the_clients_format_and_keeps_the_connection(server_url, monkeypatch,
                                                                                       caplog):
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service.PlanningService, "_reply", broken)
    with httpx.Client(base_url=server_url) as c:
        r = c.post("/plan", content=_body(), headers=MSGPACK)
        assert r.status_code == 500 and r.headers["content-type"] == "application/msgpack"
        error = msgpack.unpackb(r.content)["error"]
        assert error["code"] == "internal.error" and re.search(r"incident [0-9a-f]{12}", error["message"])
        monkeypatch.undo()
        assert c.post("/plan", content=_body(), headers=MSGPACK).status_code == 200  # same client, no reset
    assert sum("incident" in r.getMessage() for r in caplog.records) == 1  # logged once


def test_a_plan_over_the_cost_limit_names_the_setting_to_lower(tight_url):
    with PlanningClient(tight_url, api_key=API_KEY) as c, pytest.raises(PlanningError) as info:
        c.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, planner={"cem": {"samples": 4096}, "max_iterations": 100})
    e = info.value
    assert (e.status, e.code, e.field) == (422, "planner.too_expensive", "planner.cem.samples")
    assert "GFLOP" in e.message and "lower planner.cem.samples" in e.message


def test_work_beyond_the_queue_budget_is_refused_with_retry_after(model_path):
    # Budget: 50 default plans (24 samples x 4 iterations). The heavy plan costs ~1000 of them and
    # is admitted because the server is idle; until it has nearly finished, more work is refused.
    heavy = {"cem": {"samples": 1024, "elites": 4}, "max_iterations": 100, "min_iterations": 100}
    out: dict[str, object] = {}
    settings = settings_for(model_path, max_plan_cost=2000.0, max_queued_cost=50.0)
    with running_server(settings) as url:
        PlanningClient(url).wait_ready(timeout=60)

        def run_heavy() -> None:
            with PlanningClient(url, timeout=120) as c:
                out["heavy"] = c.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, planner=heavy, seed=0)

        thread = threading.Thread(target=run_heavy)
        thread.start()
        time.sleep(0.3)
        r = httpx.post(url + "/plan", content=_body(), headers=MSGPACK)
        with PlanningClient(url) as c, pytest.raises(PlanningError) as info:
            c.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO)
        thread.join(timeout=120)
        stats = PlanningClient(url).stats()
    assert r.status_code == 503, r.content
    assert msgpack.unpackb(r.content)["error"]["code"] == "server.overloaded" and int(r.headers["retry-after"]) >= 1
    assert info.value.code == "server.overloaded" and info.value.retry_after_s >= 1  # the client reads it
    assert out["heavy"]["iterations"] == 100 and stats["queue"]["overloaded"] == 2


def test_numbers_are_numbers(server_url):
    for overrides in ({"seed": "7"}, {"seed": True}, {"proprio": [True, False]}, {"proprio": ["1", "2"]}):
        r = httpx.post(server_url + "/plan", content=_body(**overrides), headers=MSGPACK)
        assert r.status_code == 422 and msgpack.unpackb(r.content)["error"]["code"] == "request.invalid", overrides


def test_a_response_never_carries_a_null_loss(server_url):
    huge = [3.0e38, -3.0e38]  # finite in float32, but the squared error overflows
    r = httpx.post(server_url + "/plan", content=_body(proprio=huge, planner={"alpha": 1e4}), headers=MSGPACK)
    if r.status_code == 200:
        assert np.isfinite(msgpack.unpackb(r.content)["loss"])
    else:
        assert r.status_code == 422 and msgpack.unpackb(r.content)["error"]["code"] == "plan.loss_non_finite"
