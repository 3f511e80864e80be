"""``POST /plan`` (cold start) and ``POST /replan`` (warm start), JSON or msgpack."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel

from server import service
from server.deps import EngineDep, ReceivedAt, RuntimeDep, body_of
from server.schemas import ErrorBody, PlanRequest, PlanResponse, ReplanRequest
from server.wire import JSON_TYPE, MSGPACK_TYPE, encode, response_wire

router = APIRouter(tags=["planning"])


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body parsed by ``body_of``: the same schema in both formats."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {
        "requestBody": {
            "required": True,
            "content": {JSON_TYPE: {"schema": schema}, MSGPACK_TYPE: {"schema": schema}},
        }
    }


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "malformed JSON or msgpack (request.malformed)",
        401: "missing or wrong API key (auth.missing, auth.invalid)",
        404: "unknown, evicted or expired session (session.not_found)",
        413: "body over the size limit (request.too_large)",
        415: "Content-Type neither JSON nor msgpack",
        422: "invalid field, image, proprio or planner override",
        503: "model still loading (server.loading)",
    }.items()
}
_PLAN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the plan; msgpack when the request was msgpack or Accept asks for it",
        "content": {MSGPACK_TYPE: {"schema": {"$ref": "#/components/schemas/PlanResponse"}}},
    },
    **_ERRORS,
}


@router.post(
    "/plan",
    response_model=PlanResponse,
    responses=_PLAN_RESPONSES,
    openapi_extra=request_body(PlanRequest),
    summary="plan from a frame towards a goal frame; starts (or restarts) a session cold",
)
async def plan(
    request: Request,
    runtime: RuntimeDep,
    engine: EngineDep,
    received_at: ReceivedAt,
    body: Annotated[PlanRequest, Depends(body_of(PlanRequest))],
) -> Response:
    result = await service.plan(runtime, engine, body, received_at)
    runtime.metrics.record_plan(
        "POST /plan", result.timing_ms.total, result.iterations, result.stop_reason
    )
    return encode(result.model_dump(), response_wire(request))


@router.post(
    "/replan",
    response_model=PlanResponse,
    responses=_PLAN_RESPONSES,
    openapi_extra=request_body(ReplanRequest),
    summary="plan again from a new frame, warm-started from the session's last plan",
)
async def replan(
    request: Request,
    runtime: RuntimeDep,
    engine: EngineDep,
    received_at: ReceivedAt,
    body: Annotated[ReplanRequest, Depends(body_of(ReplanRequest))],
) -> Response:
    result = await service.replan(runtime, engine, body, received_at)
    runtime.metrics.record_plan(
        "POST /replan", result.timing_ms.total, result.iterations, result.stop_reason
    )
    return encode(result.model_dump(), response_wire(request))
