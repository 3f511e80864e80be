"""/health, /stats, /metrics and /openapi.json say what the server really is and does."""

from __future__ import annotations

import re
import threading

import httpx
import pytest

from tests.server.conftest import GOAL_PROPRIO, PROPRIO, frame
from wm_client import PlanningClient


@pytest.fixture
def c(server_url):
    with PlanningClient(server_url) as client:
        yield client


def test_health_reports_the_model_in_eval_mode(c):
    health = c.health()
    assert health["status"] == "ok" and health["eval_mode"] is True
    assert health["device"] == "cpu"
    assert health["model"]["name"] == "tiny-random" and health["model"]["image_size"] == 32


def test_stats_after_plans(c):
    before = c.stats()
    reply = c.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=0)
    c.replan(reply["session_id"], frame(3), PROPRIO)
    stats = c.stats()
    assert stats["requests"]["POST /plan"] == before["requests"].get("POST /plan", 0) + 1
    assert stats["requests"]["POST /replan"] == before["requests"].get("POST /replan", 0) + 1
    latency = stats["latency_ms"]["POST /plan"]
    assert latency["count"] >= 1 and 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    planner = stats["planner"]
    assert planner["plans"] == before["planner"]["plans"] + 2
    assert planner["mean_iterations"] > 0 and 0 <= planner["early_stop_rate"] <= 1
    assert sum(planner["stop_reasons"].values()) == planner["plans"]
    assert stats["sessions"]["active"] >= 1 and stats["sessions"]["max"] == 256
    assert stats["model"]["name"] == "tiny-random" and stats["model"]["parameters"] > 0
    provenance = stats["model"]["stats_provenance"]
    assert provenance["split"] == "train" and provenance["dataset"] == "synthetic"
    assert stats["device"]["kind"] == "cpu" and stats["device"]["rss_bytes"] > 0
    assert stats["planner_defaults"]["cem"]["samples"] == 24  # FAST_PLANNER over the CPU preset
    assert stats["limits"]["cem.samples"] == stats["limits"]["icem.samples"] == 4096
    assert stats["uptime_s"] > 0


_SAMPLE = re.compile(r'^[a-z_:][a-z0-9_:]*(\{([a-z_]+="[^"]*",?)*\})? [-+0-9.eEinfNa]+$')


def test_metrics_are_prometheus_text(c):
    c.plan(frame(1), frame(2), PROPRIO, GOAL_PROPRIO, seed=0)
    text = c.metrics()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines and all(_SAMPLE.match(line) for line in lines), [
        line for line in lines if not _SAMPLE.match(line)]
    assert re.search(r'^wm_requests_total\{method="POST",path="/plan",status="200"\} [1-9]', text, re.M)
    assert re.search(r'^wm_plan_latency_seconds_count\{path="/plan"\} [1-9]', text, re.M)
    assert re.search(r'^wm_model_info\{device="cpu",name="tiny-random"\} 1', text, re.M)
    assert "# TYPE wm_plan_latency_seconds histogram" in text
    assert "# TYPE wm_requests_total counter" in text and "# TYPE wm_sessions_total counter" in text
    assert re.search(r'^wm_sessions_total\{event="created"\} [1-9]', text, re.M)
    assert re.search(r"^wm_ready 1", text, re.M)


def test_openapi_lists_the_endpoints_and_their_bodies(server_url):
    schema = httpx.get(server_url + "/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) == {"/health", "/stats", "/metrics", "/plan", "/replan", "/sessions/{session_id}"}
    assert set(paths["/plan"]) == {"post"} and set(paths["/sessions/{session_id}"]) == {"delete"}
    for path, model in (("/plan", "PlanRequest"), ("/replan", "ReplanRequest")):
        content = paths[path]["post"]["requestBody"]["content"]
        assert set(content) == {"application/json", "application/msgpack"}
        assert content["application/json"]["schema"]["$ref"] == f"#/components/schemas/{model}"
        responses = paths[path]["post"]["responses"]
        assert {"200", "400", "404", "408", "413", "415", "422", "500", "503"} <= set(responses)
        assert "401" not in responses and "security" not in paths[path]["post"]  # this server has no key
        assert "application/msgpack" in responses["200"]["content"]
    components = schema["components"]["schemas"]
    plan_request = components["PlanRequest"]
    assert plan_request["additionalProperties"] is False
    assert set(plan_request["properties"]) == {
        "obs", "goal", "proprio", "goal_proprio", "session_id", "seed", "deadline_ms", "planner", "pending_actions"}
    assert set(plan_request["required"]) == {"obs", "goal"}
    image = components["Image"]
    assert image["properties"]["dtype"]["enum"] == ["uint8", "float16", "float32", "float64"]
    assert image["additionalProperties"] is False
    assert {"executed_steps", "pending_actions"} <= set(components["ReplanRequest"]["properties"])
    assert {"actions", "model_actions", "timing_ms", "warnings", "loss_trace"} <= set(
        components["PlanResponse"]["properties"])
    # Every $ref resolves.
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', httpx.get(server_url + "/openapi.json").text))
    assert refs <= set(components), refs - set(components)


def test_docs_page_is_served(server_url):
    r = httpx.get(server_url + "/docs")
    assert r.status_code == 200 and "swagger" in r.text.lower()


def test_health_is_503_while_the_model_loads(model_path, monkeypatch):
    from server.engine import Engine
    from tests.server.conftest import running_server, settings_for

    loaded = Engine.load.__func__
    gate = threading.Event()

    def slow_load(cls, *args, **kwargs):
        gate.wait(timeout=30)
        return loaded(cls, *args, **kwargs)

    monkeypatch.setattr(Engine, "load", classmethod(slow_load))
    with running_server(settings_for(model_path)) as url:
        r = httpx.get(url + "/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = httpx.post(url + "/plan", json={})
        assert r.status_code == 503 and r.json()["error"]["code"] == "server.loading"
        assert r.headers["retry-after"] == "1"
        gate.set()
        with PlanningClient(url) as c:
            assert c.wait_ready(timeout=30)["status"] == "ok"


def test_openapi_declares_bearer_auth_when_and_only_when_a_key_is_set(strict_url):
    from tests.server.conftest import API_KEY

    schema = httpx.get(strict_url + "/openapi.json", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if path == "/health":
                assert "security" not in operation
            else:
                assert operation["security"] == [{"bearer": []}] and "401" in operation["responses"], path
