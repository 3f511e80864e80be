"""Liveness and readiness, without auth so that probes need no key."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.deps import RuntimeDep
from server.schemas import HealthResponse
from server.wire import encode, response_wire

router = APIRouter(tags=["operations"])


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "loading, or failed to load"}},
    summary="200 when the model is loaded in eval mode and serving",
)
async def health(request: Request, runtime: RuntimeDep) -> Response:
    engine = runtime.engine
    if engine is None:
        body = HealthResponse(status=runtime.status, error=runtime.error, replica=runtime.replica, pid=os.getpid())
        return encode(body.model_dump(), response_wire(request), 503)
    eval_mode = engine.eval_mode()
    body = HealthResponse(
        status="ok" if eval_mode else "failed",
        replica=runtime.replica,
        pid=os.getpid(),
        model=engine.describe(),
        device=str(engine.device),
        eval_mode=eval_mode,
        error=None if eval_mode else "a model submodule is in training mode",
    )
    return encode(body.model_dump(), response_wire(request), 200 if eval_mode else 503)
