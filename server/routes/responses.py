"""Error responses as the OpenAPI schema documents them, per route."""

from __future__ import annotations

from typing import Any

from server.schemas import ErrorBody

Responses = dict[int | str, dict[str, Any]]


def errors(**described: str) -> Responses:
    """{status: description} -> FastAPI ``responses`` with the error body."""
    return {int(status[1:]): {"model": ErrorBody, "description": text} for status, text in described.items()}


# Every route but /health: the key is checked before routing.
AUTH_ERRORS = errors(_401="missing or wrong API key (auth.missing, auth.invalid); only when the server has a key")

PLAN_ERRORS = errors(
    _400="malformed JSON or msgpack (request.malformed)",
    _401="missing or wrong API key (auth.missing, auth.invalid); only when the server has a key",
    _404="unknown, evicted or expired session (session.not_found)",
    _408="the body did not arrive within the server's body timeout (request.timeout)",
    _413="body over the size limit (request.too_large)",
    _415="Content-Type neither JSON nor msgpack (request.unsupported_media_type)",
    _422="invalid field, image, proprio or planner override (request.*, image.*, proprio.*, planner.*, "
         "including planner.too_expensive over the per-request cost limit)",
    _500="the server failed on this request (internal.error, with an incident id; the server keeps running)",
    _503="model loading (server.loading), queue over its budget (server.overloaded, with Retry-After), "
         "deadline passed while queued (plan.deadline_passed), server stopping (server.shutting_down), or "
         "too many connections",
)
