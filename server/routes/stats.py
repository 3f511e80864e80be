"""What the server has done: ``/stats`` for people, ``/metrics`` for Prometheus."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import Metric

from server.deps import RuntimeDep
from server.metrics import counter, gauge, info
from server.routes.responses import AUTH_ERRORS
from server.runtime import Runtime
from server.schemas import StatsResponse
from server.wire import encode, response_wire

router = APIRouter(tags=["operations"])


@router.get("/stats", response_model=StatsResponse, responses=AUTH_ERRORS,
            summary="counters, latencies, queue, sessions, model")
async def stats(request: Request, runtime: RuntimeDep) -> Response:
    return encode(build_stats(runtime).model_dump(), response_wire(request))


@router.get("/metrics", response_class=Response, responses=AUTH_ERRORS,
            summary="the same counters in Prometheus text format")
async def metrics(runtime: RuntimeDep) -> Response:
    runtime.sessions.sweep()
    return Response(runtime.metrics.prometheus(), media_type=CONTENT_TYPE_LATEST)


def scrape(runtime: Runtime) -> Iterable[Metric]:
    """Values that live outside the counters, read at scrape time."""
    yield gauge("wm_ready", "1 when the model is loaded and serving", float(runtime.status == "ok"))
    yield gauge("wm_sessions_active", "live MPC sessions", float(len(runtime.sessions)))
    yield gauge("wm_sessions_max", "session limit before LRU eviction", float(runtime.sessions.max_sessions))
    yield counter("wm_sessions", "sessions created, evicted, expired or deleted since start-up",
                  {k: float(v) for k, v in runtime.sessions.counts.items()}, "event")
    yield gauge("wm_decode_in_flight_bytes", "decoded frame bytes being decoded now",
                float(runtime.decode_budget.in_flight))
    scheduler, engine = runtime.scheduler, runtime.engine
    if scheduler is not None:
        s = scheduler.stats
        queued = scheduler.queued()
        yield gauge("wm_queue_pending", "plan jobs waiting to start", float(queued["pending"]))
        yield gauge("wm_queue_running", "plan jobs running", float(queued["running_requests"]))
        yield gauge("wm_queue_outstanding_gflop", "work queued or still to run", float(queued["outstanding_gflop"]))
        yield counter("wm_plan_batches", "batches planned", {"all": float(s.batches)}, "kind")
        yield counter("wm_plan_batched_requests", "requests planned in those batches",
                      {"all": float(s.batched_requests)}, "kind")
        yield counter("wm_jobs_dropped", "jobs dropped before they started, by reason",
                      {k: float(v) for k, v in s.dropped.items()}, "reason")
        yield counter("wm_jobs_cancelled_running", "running jobs stopped because their client left",
                      {"client_left": float(s.cancelled_running)}, "reason")
        yield counter("wm_overloaded", "requests refused with server.overloaded",
                      {"queue_budget": float(s.overloaded)}, "reason")
        yield counter("wm_model_gflop", "analytic GFLOPs planned", {"plan": s.gflop_done}, "kind")
    if engine is not None:
        for key, value in engine.memory().items():
            if key.endswith("_bytes") and value is not None:
                yield gauge(f"wm_device_{key}", f"device memory: {key}", float(value))
        yield info("wm_model", "the loaded model", {"name": str(engine.describe().get("name", "")),
                                                     "device": str(engine.device)})


def build_stats(runtime: Runtime) -> StatsResponse:
    m = runtime.metrics
    engine, scheduler = runtime.engine, runtime.scheduler
    store = runtime.sessions
    store.sweep()
    errors = {endpoint: dict(sorted(codes.items())) for endpoint, codes in sorted(m.errors.items())}
    planner = m.planner_summary()
    queue: dict[str, Any] = {}
    if scheduler is not None:
        s = scheduler.stats
        planner |= {"batches": s.batches,
                    "mean_batch_requests": round(s.batched_requests / s.batches, 3) if s.batches else None}
        waits = np.asarray(s.queue_wait_s[-1024:], dtype=np.float64) * 1000
        queue = scheduler.queued() | {
            "queue_wait_ms": {"count": int(waits.size),
                              "p50": round(float(np.percentile(waits, 50)), 3) if waits.size else None,
                              "p99": round(float(np.percentile(waits, 99)), 3) if waits.size else None},
            "dropped": dict(s.dropped), "cancelled_running": s.cancelled_running, "overloaded": s.overloaded,
            "gflop_done": round(s.gflop_done, 3), "busy_s": round(s.busy_s, 3)}
    else:
        planner |= {"batches": 0, "mean_batch_requests": None}
    budget = runtime.decode_budget
    settings = runtime.settings
    return StatsResponse(
        uptime_s=round(m.uptime_s(), 3),
        status=runtime.status,
        requests=dict(sorted(m.requests.items())),
        errors=errors,
        errors_by_code=m.errors_by_code(),
        latency_ms=m.latency_summary(),
        planner=planner,
        queue=queue,
        decode={"in_flight_bytes": budget.in_flight, "peak_bytes": budget.peak, "budget_bytes": budget.max_bytes,
                "waits": budget.waits},
        goal_cache={"size": len(runtime.goals), "capacity": runtime.goals.capacity, "hits": runtime.goals.hits,
                    "misses": runtime.goals.misses},
        sessions={"active": len(store), "max": store.max_sessions, "ttl_s": store.ttl_s, **store.counts},
        device=engine.memory() | {"device": str(engine.device)} if engine else {},
        model=engine.describe() if engine else None,
        planner_defaults=engine.base_config.to_dict() if engine else None,
        limits=settings.limits() | {
            "max_plan_gflop": runtime.limits.max_plan_gflop if engine else None,
            "default_plan_gflop": runtime.base_gflop if engine else None,
            "max_plan_cost": settings.max_plan_cost,
            "max_queued_cost": settings.max_queued_cost,
            "max_body_bytes": settings.max_body_bytes,
            "max_image_pixels": settings.max_image_pixels,
            "resize_policy": settings.resize_policy,
        },
    )
