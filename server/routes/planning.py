"""``POST /plan`` (cold start) and ``POST /replan`` (warm start), JSON or msgpack."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel

from server.deps import ReceivedAt, Ready, RuntimeDep, body_of, unless_client_leaves
from server.routes.responses import PLAN_ERRORS
from server.schemas import PlanRequest, PlanResponse, ReplanRequest
from server.wire import JSON_TYPE, MSGPACK_TYPE, encode, response_wire

router = APIRouter(tags=["planning"])


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body parsed by ``body_of``: the same schema in both formats."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {JSON_TYPE: {"schema": schema},
                                                          MSGPACK_TYPE: {"schema": schema}}}}


_PLAN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the plan; msgpack when the request was msgpack or Accept asks for it",
        "content": {MSGPACK_TYPE: {"schema": {"$ref": "#/components/schemas/PlanResponse"}}},
    },
    **PLAN_ERRORS,
}


@router.post("/plan", response_model=PlanResponse, responses=_PLAN_RESPONSES,
             openapi_extra=request_body(PlanRequest),
             summary="plan from a frame towards a goal frame; starts (or restarts) a session cold",
             dependencies=[Ready])
async def plan(request: Request, runtime: RuntimeDep, received_at: ReceivedAt,
               body: Annotated[PlanRequest, Depends(body_of(PlanRequest))]) -> Response:
    result = await unless_client_leaves(request, runtime.ready_service().plan(body, received_at))
    runtime.metrics.record_plan("POST", "/plan", result.timing_ms.total, result.iterations, result.stop_reason,
                                result.method, None if result.subgoal is None else result.subgoal.used)
    return encode(result.model_dump(), response_wire(request))


@router.post("/replan", response_model=PlanResponse, responses=_PLAN_RESPONSES,
             openapi_extra=request_body(ReplanRequest),
             summary="plan again from a new frame, warm-started from the session's last plan",
             dependencies=[Ready])
async def replan(request: Request, runtime: RuntimeDep, received_at: ReceivedAt,
                 body: Annotated[ReplanRequest, Depends(body_of(ReplanRequest))]) -> Response:
    result = await unless_client_leaves(request, runtime.ready_service().replan(body, received_at))
    runtime.metrics.record_plan("POST", "/replan", result.timing_ms.total, result.iterations, result.stop_reason,
                                result.method, None if result.subgoal is None else result.subgoal.used)
    return encode(result.model_dump(), response_wire(request))
