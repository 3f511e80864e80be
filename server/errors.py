"""Errors a client can act on: an HTTP status, a stable code and one sentence.

Every error response has the body ``{"error": {"code", "message", "field"}}``.
Domain modules raise their own exceptions (``ImageError``,
``SessionNotFound``); the handlers registered in ``server.app`` turn them and
framework errors into this shape, so no other module formats HTTP errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ApiError(Exception):
    """An error that maps directly to a response.

    Args:
        status: HTTP status code (4xx for the client's mistakes).
        code: stable dotted identifier, e.g. ``"planner.out_of_bounds"``.
        message: what was received and what to send instead.
        field: the request field at fault (dotted path), if any.
        headers: extra response headers (``WWW-Authenticate``, ``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


class ClientGone(Exception):
    """The client disconnected before its answer was ready; nothing can be sent."""


# Pydantic error types that deserve their own code; everything else is
# `request.invalid`. The custom `bad_base64` type is raised by schemas.
_PYDANTIC_CODES = {
    "extra_forbidden": "request.unknown_field",
    "missing": "request.missing_field",
    "bad_base64": "image.bad_base64",
}

# Path-param and body locations start with where the value came from.
_LOC_SOURCES = {"body", "path", "query", "header"}


def field_path(loc: Sequence[Any]) -> str | None:
    """Dotted path of a pydantic error location, e.g. ``planner.icem.samples``."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in _LOC_SOURCES:
        parts = parts[1:]
    return ".".join(parts) or None


def from_validation_errors(errors: Sequence[Mapping[str, Any]]) -> ApiError:
    """Turn pydantic's error list into one 422 naming the first problem."""
    if not errors:
        return ApiError(422, "request.invalid", "the request is invalid")
    first = errors[0]
    field = field_path(first.get("loc", ()))
    kind = str(first.get("type", ""))
    code = _PYDANTIC_CODES.get(kind, "request.invalid")
    top = (field or "").split(".")[0]
    if kind == "finite_number" and top in ("proprio", "goal_proprio"):
        # NaN/Inf arrive through msgpack (and JSON's 1e999); they have their own code.
        return ApiError(422, "proprio.non_finite",
                        f"{top} has a non-finite value at {field}; send finite numbers in raw env units.", top)
    where = field or "the body"
    if kind == "extra_forbidden":
        message = f"unknown field '{where}'; /openapi.json lists the accepted fields"
    elif kind == "missing":
        message = f"required field '{where}' is missing"
    else:
        received = first.get("input")
        shown = _short(received)
        message = f"{where}: {first.get('msg', 'invalid value')} (received {shown})"
    more = len(errors) - 1
    if more:
        message += f"; and {more} more problem{'s' if more > 1 else ''}"
    return ApiError(422, code, message, field)


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} bytes"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
