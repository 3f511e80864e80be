"""Dependencies shared by the routes: the runtime, the arrival time, typed bodies,
and the client's departure.

Bodies are parsed here rather than by FastAPI because they arrive as JSON or
msgpack; the routes declare the same models in ``openapi_extra`` so the
schema documents both. Auth is not a dependency: it is checked before routing
(server/app.py), so that 404 and 405 answers need the key too.

Every dependency is ``async def``: none blocks, and FastAPI runs a plain
``def`` dependency in its threadpool, a thread hop per dependency per
request (measured: ~0.5 ms of a raw frame's overhead on a busy 2-core CPU).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from server.errors import ClientGone, from_validation_errors
from server.runtime import Runtime
from server.wire import content_wire, decode_body, read_body

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def ready(runtime: RuntimeDep) -> None:
    """503 while the model loads (or after it failed to), before the body is read."""
    runtime.ready_service()


Ready = Depends(ready)


async def received_at(request: Request) -> float:
    """Monotonic time the request arrived (set by the metrics middleware)."""
    value = request.scope.get("state", {}).get("received_at")
    return float(value) if value is not None else time.monotonic()


ReceivedAt = Annotated[float, Depends(received_at)]


def body_of(model: type[M]) -> Callable[[Request, Runtime], Awaitable[M]]:
    """A dependency reading a capped, timed JSON/msgpack body into ``model``."""

    async def parse(request: Request, runtime: RuntimeDep) -> M:
        wire = content_wire(request)
        raw = await read_body(request, runtime.settings.max_body_bytes, runtime.settings.body_timeout_s)
        data = decode_body(raw, wire)
        del raw
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise from_validation_errors(exc.errors(include_url=False)) from None

    return parse


async def unless_client_leaves(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first (ClientGone).

    The body has been read, so the next ASGI message is the disconnect, if
    it comes. Cancelling the work cancels its plan job (server/scheduler.py).
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server is stopping: cancel the work with us
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):  # noqa: BLE001 - nobody is left to tell
        pass
    raise ClientGone()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
