"""What the server has done: ``/stats`` for people, ``/metrics`` for Prometheus."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from server.deps import RuntimeDep
from server.runtime import Runtime
from server.schemas import StatsResponse
from server.wire import encode, response_wire

router = APIRouter(tags=["operations"])


@router.get("/stats", response_model=StatsResponse, summary="counters, latencies, sessions, model")
async def stats(request: Request, runtime: RuntimeDep) -> Response:
    return encode(build_stats(runtime).model_dump(), response_wire(request))


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="the same counters in Prometheus text format",
)
async def metrics(runtime: RuntimeDep) -> PlainTextResponse:
    m = runtime.metrics
    engine = runtime.engine
    runtime.sessions.sweep()
    gauges: dict[str, tuple[str, float]] = {
        "wm_ready": ("1 when the model is loaded and serving", float(runtime.status == "ok")),
        "wm_sessions_active": ("live MPC sessions", float(len(runtime.sessions))),
        "wm_sessions_max": ("session limit before LRU eviction", float(runtime.sessions.max_sessions)),
    }
    for reason, count in runtime.sessions.counts.items():
        gauges[f"wm_sessions_{reason}_total"] = (f"sessions {reason} since start-up", float(count))
    info: dict[str, str] = {}
    if engine is not None:
        for key, value in engine.memory().items():
            if key.endswith("_bytes") and value is not None:
                gauges[f"wm_device_{key}"] = (f"device memory: {key}", float(value))
        described = engine.describe()
        info = {"name": str(described.get("name", "")), "device": str(engine.device)}
    text = m.prometheus(gauges, info)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


def build_stats(runtime: Runtime) -> StatsResponse:
    m = runtime.metrics
    engine = runtime.engine
    store = runtime.sessions
    store.sweep()
    errors = {endpoint: dict(sorted(codes.items())) for endpoint, codes in sorted(m.errors.items())}
    return StatsResponse(
        uptime_s=round(m.uptime_s(), 3),
        status=runtime.status,
        requests=dict(sorted(m.requests.items())),
        errors=errors,
        errors_by_code=m.errors_by_code(),
        latency_ms=m.latency_summary(),
        planner=m.planner_summary(),
        sessions={
            "active": len(store),
            "max": store.max_sessions,
            "ttl_s": store.ttl_s,
            **store.counts,
        },
        device=engine.memory() | {"device": str(engine.device)} if engine else {},
        model=engine.describe() if engine else None,
        planner_defaults=_config_dict(engine.base_config) if engine else None,
        limits=runtime.settings.limits()
        | {
            "max_body_bytes": runtime.settings.max_body_bytes,
            "max_image_pixels": runtime.settings.max_image_pixels,
            "resize_policy": runtime.settings.resize_policy,
        },
    )


def _config_dict(config: object) -> dict[str, object]:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {}
