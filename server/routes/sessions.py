"""``DELETE /sessions/{id}``: end a session and free its state now."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from server.deps import RuntimeDep
from server.routes.responses import AUTH_ERRORS, errors
from server.schemas import SESSION_ID_PATTERN

router = APIRouter(tags=["planning"])


@router.delete(
    "/sessions/{session_id}",
    status_code=204,
    response_class=Response,
    responses={**AUTH_ERRORS, **errors(_404="no such session (session.not_found)",
                                       _422="the id does not match the session id pattern")},
    summary="delete a session",
)
async def delete_session(
    runtime: RuntimeDep,
    session_id: Annotated[str, Path(pattern=SESSION_ID_PATTERN)],
) -> Response:
    runtime.sessions.delete(session_id)
    return Response(status_code=204)
