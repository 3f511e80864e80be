"""JSON and msgpack on the wire: reading capped bodies, negotiating, encoding.

msgpack is decoded with ``raw=False, strict_map_key=True`` and no ext hook,
so a body can only produce dicts, lists, strings, bytes and numbers; nothing
on the wire is ever unpickled.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, Literal

import msgpack
from fastapi import Request
from fastapi.responses import Response

from starlette.requests import ClientDisconnect

from server.errors import ApiError, ClientGone

Wire = Literal["json", "msgpack"]
JSON_TYPE = "application/json"
MSGPACK_TYPE = "application/msgpack"
_MSGPACK_TYPES = {"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"}


def content_wire(request: Request) -> Wire:
    """The body's format from ``Content-Type``; absent means JSON."""
    raw = request.headers.get("content-type")
    if raw is None:
        return "json"
    media = raw.split(";", 1)[0].strip().lower()
    if media in _MSGPACK_TYPES:
        return "msgpack"
    if media == JSON_TYPE or (media.startswith("application/") and media.endswith("+json")):
        return "json"
    raise ApiError(
        415,
        "request.unsupported_media_type",
        f"Content-Type '{raw}' is not supported; send application/json or application/msgpack "
        "(curl -d needs -H 'Content-Type: application/json').",
    )


def response_wire(request: Request) -> Wire:
    """``Accept`` decides; without a preference, answer in the request's own format."""
    accept = request.headers.get("accept", "").lower()
    if any(t in accept for t in _MSGPACK_TYPES):
        return "msgpack"
    if JSON_TYPE in accept:
        return "json"
    if request.method in ("POST", "PUT", "PATCH"):
        try:
            return content_wire(request)
        except ApiError:
            return "json"
    return "json"


async def read_body(request: Request, limit: int, timeout_s: float = 30.0) -> bytes:
    """The whole body, refusing more than ``limit`` bytes before reading them and
    a body not complete within ``timeout_s`` (408). A client that disconnects
    mid-upload raises ClientGone."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "request.malformed", f"Content-Length '{declared}' is not a number") from None
        if size > limit:
            raise _too_large(size, limit)
    chunks: list[bytes] = []
    received = 0
    deadline = asyncio.get_running_loop().time() + timeout_s
    stream = request.stream()
    try:
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                chunk = await asyncio.wait_for(anext(stream), max(left, 0.0))
            except StopAsyncIteration:
                break
            # Chunked uploads carry no length: count while streaming.
            received += len(chunk)
            if received > limit:
                raise _too_large(received, limit, at_least=True)
            chunks.append(chunk)
    except asyncio.TimeoutError:
        raise ApiError(408, "request.timeout",
                       f"the body did not arrive within {timeout_s:g} s ({received} bytes received); "
                       "send it at once", headers={"Connection": "close"}) from None
    except ClientDisconnect:
        raise ClientGone() from None
    return b"".join(chunks)


def decode_body(body: bytes, wire: Wire) -> Any:
    """Parse bytes into plain Python values; malformed input is a 400."""
    if not body:
        raise ApiError(400, "request.malformed", "the request body is empty; send a JSON or msgpack object")
    if wire == "msgpack":
        try:
            return msgpack.unpackb(body, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
            raise ApiError(
                400, "request.malformed", f"the body is not valid msgpack ({_reason(exc)})"
            ) from None
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8
        raise ApiError(400, "request.malformed", f"the body is not valid JSON ({_reason(exc)})") from None


def encode(payload: Any, wire: Wire, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A response in the chosen format. Non-finite floats become null in JSON."""
    if wire == "msgpack":
        return Response(msgpack.packb(payload, use_bin_type=True), status, headers, MSGPACK_TYPE)
    text = json.dumps(_finite(payload), allow_nan=False, separators=(",", ":"))
    return Response(text, status, headers, JSON_TYPE)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _too_large(size: int, limit: int, at_least: bool = False) -> ApiError:
    got = f"over {size}" if at_least else str(size)
    return ApiError(
        413,
        "request.too_large",
        f"the body is {got} bytes, over this server's limit of {limit} "
        "(WM_MAX_BODY_BYTES); send smaller or compressed (PNG/JPEG) frames.",
    )


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
