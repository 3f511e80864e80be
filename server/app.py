"""Build the FastAPI application: routers, auth, error handling, metrics, lifespan.

``create_app(settings)`` returns an app that starts listening at once and
loads the model in the background (``/health`` is 503 until it is ready).
Every error, whoever raises it, leaves through ``error_response`` and has the
body ``{"error": {"code", "message", "field"}}``, in the client's format.

Middleware, outermost first:

* ``RequestMetrics`` stamps the arrival time and counts every response by
  method, route template and status (fixed label sets);
* ``CatchAll`` turns an unexpected exception into a 500 in the client's
  format, logged once with an incident id, and keeps the connection usable
  (Starlette's own handler re-raises, and uvicorn then drops the keep-alive
  connection);
* ``RequireApiKey`` checks the key before routing, so 404 and 405 answers
  need it too.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image as PILImage
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from planning.config import legacy_names
from server.errors import ApiError, ClientGone, from_validation_errors
from server.images import ImageError
from server.metrics import ScrapeCollector
from server.routes import health, planning, sessions, stats
from server.runtime import Runtime
from server.scheduler import DeadlinePassed, Overloaded, ShuttingDown
from server.schemas import PlanRequest, ReplanRequest, section_schema_name
from server.service import as_api_error
from server.sessions import SessionNotFound
from server.settings import Settings
from server.wire import encode, response_wire

log = logging.getLogger(__name__)
VERSION = "0.2.0"
_UNPROTECTED = frozenset({"/health"})
CLIENT_CLOSED = 499  # nginx's "client closed request": recorded, never sent


def create_app(settings: Settings, on_fatal: Callable[[BaseException], None] | None = None,
               load_before_serving: bool = False) -> FastAPI:
    """The planning server for ``settings``; ``on_fatal`` is called if the model fails to load.

    load_before_serving: the lifespan's start-up waits for the model (Ray Serve: a replica
    is ready only once its model is); by default it loads in the background and /health
    says 503 "loading" meanwhile.
    """
    runtime = Runtime(settings, on_fatal)
    runtime.metrics.add_collector(ScrapeCollector(lambda: stats.scrape(runtime)))
    # Pillow's own bomb check, aligned with ours (ours runs first on the header).
    PILImage.MAX_IMAGE_PIXELS = settings.max_image_pixels

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if load_before_serving:
            await runtime.load()
            if runtime.status != "ok":
                raise RuntimeError(f"the model failed to load: {runtime.error}")
        tasks = [asyncio.create_task(runtime.sweep_sessions(), name="sweep-sessions")]
        if not load_before_serving:
            tasks.append(asyncio.create_task(runtime.load(), name="load-model"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(runtime.close)

    app = FastAPI(
        title="World-model planning server",
        version=VERSION,
        description="CEM planning in the latent space of a DINO-WM-style world model. "
        "Bodies are JSON or msgpack; every error is {\"error\": {code, message, field}}.",
        lifespan=lifespan,
        # Served below behind the API key, like everything but /health.
        openapi_url=None, docs_url=None, redoc_url=None,
    )
    app.state.runtime = runtime
    for router in (health.router, stats.router, planning.router, sessions.router, _docs_router(app)):
        app.include_router(router)
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]

    _add_error_handlers(app, runtime)
    app.add_middleware(RequireApiKey, runtime=runtime)
    app.add_middleware(CatchAll, runtime=runtime)
    app.add_middleware(RequestMetrics, runtime=runtime)
    return app


def route_path(app: Any, scope: Scope) -> str:
    """The route template a request is for (``/sessions/{session_id}``), also when its
    method is not allowed; ``unmatched`` otherwise. A fixed set: safe as a label."""
    partial = None
    for route in _flat_routes(app):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(route.path)
        if match == Match.PARTIAL and partial is None:
            partial = str(route.path)
    return partial or "unmatched"


def _flat_routes(app: Any) -> list[Any]:
    """The app's routes with included routers expanded (routers are included without a prefix)."""
    cached = getattr(app.state, "flat_routes", None)
    if cached is None:
        def expand(routes: list[Any]) -> list[Any]:
            out: list[Any] = []
            for route in routes:
                inner = getattr(route, "original_router", None)
                out.extend(expand(list(inner.routes)) if inner is not None else [route])
            return out

        cached = app.state.flat_routes = expand(list(app.router.routes))
    return cached


def error_response(runtime: Runtime, request: Request, error: ApiError) -> Response:
    """The one way an error leaves the server: counted, in the client's format."""
    runtime.metrics.record_error(request.method, route_path(request.app, request.scope), error.code)
    body = {"error": {"code": error.code, "message": error.message, "field": error.field}}
    return encode(body, response_wire(request), error.status, error.headers)


# -- errors ---------------------------------------------------------------------


def _add_error_handlers(app: FastAPI, runtime: Runtime) -> None:
    def handle(kind: type[Exception], to_error: Callable[[Any, Request], ApiError]) -> None:
        async def handler(request: Request, exc: Exception) -> Response:
            return error_response(runtime, request, to_error(exc, request))

        app.add_exception_handler(kind, handler)

    for kind in (ApiError, ImageError, SessionNotFound, Overloaded, ShuttingDown, DeadlinePassed):
        handle(kind, lambda e, r: as_api_error(e))
    handle(RequestValidationError, lambda e, r: from_validation_errors(e.errors()))
    handle(StarletteHTTPException, _http_error)

    async def client_gone(request: Request, exc: Exception) -> Response:
        runtime.metrics.record_error(request.method, route_path(request.app, request.scope), "client.disconnected")
        return Response(status_code=CLIENT_CLOSED)  # nobody reads it; the metrics do

    app.add_exception_handler(ClientGone, client_gone)


def _http_error(exc: StarletteHTTPException, request: Request) -> ApiError:
    route = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        error = ApiError(404, "http.not_found", f"no endpoint {route}; see /openapi.json")
    elif exc.status_code == 405:
        error = ApiError(405, "http.method_not_allowed", f"{route} is not allowed; see /openapi.json")
    else:
        error = ApiError(exc.status_code, f"http.{exc.status_code}", str(exc.detail))
    error.headers.update(exc.headers or {})
    return error


# -- middleware ------------------------------------------------------------------


class RequestMetrics:
    """Stamps the arrival time and counts every response by method, route and status."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app, self.runtime = app, runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["received_at"] = time.monotonic()
        status = CLIENT_CLOSED

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.runtime.metrics.record_response(scope["method"], route_path(scope["app"], scope), status)


class CatchAll:
    """An unexpected exception becomes a 500 ``internal.error`` in the client's format,
    logged once with an incident id; the connection stays usable."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app, self.runtime = app, runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last line of defence, logged with an incident id
            incident = uuid.uuid4().hex[:12]
            log.error("incident %s on %s %s", incident, scope["method"], scope["path"], exc_info=exc)
            if started:  # too late for an error response: the client sees a cut-off body
                return
            request = Request(scope, receive)
            error = ApiError(500, "internal.error",
                             f"the server failed on this request (incident {incident}, logged); "
                             "the server is still running")
            await error_response(self.runtime, request, error)(scope, receive, send)


class RequireApiKey:
    """401 unless the server has no key, the path is /health, or the request carries ``Bearer <key>``."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app, self.runtime = app, runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self.runtime.settings.api_key
        if scope["type"] != "http" or key is None or scope["path"] in _UNPROTECTED:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        error = _auth_error(request.headers.get("authorization"), key.get_secret_value())
        if error is None:
            await self.app(scope, receive, send)
            return
        await error_response(self.runtime, request, error)(scope, receive, send)


def _auth_error(header: str | None, key: str) -> ApiError | None:
    challenge = {"WWW-Authenticate": "Bearer"}
    if not header:
        return ApiError(401, "auth.missing", "this server needs an API key: send 'Authorization: Bearer KEY'",
                        headers=challenge)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return ApiError(401, "auth.invalid", "the Authorization header must be 'Bearer KEY'", headers=challenge)
    if not hmac.compare_digest(token.strip().encode(), key.encode()):
        return ApiError(401, "auth.invalid", "the API key is not valid", headers=challenge)
    return None


# -- OpenAPI ----------------------------------------------------------------------


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's schema plus the bodies that ``body_of`` parses by hand; bearer auth
    is declared on every operation but /health when, and only when, a key is set."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (PlanRequest, ReplanRequest):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        _planner_maxima(components, settings.limits())
        if settings.api_key is not None:
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "the server's API key"}}
            for path, operations in schema["paths"].items():
                for operation in operations.values():
                    if path not in _UNPROTECTED:
                        operation["security"] = [{"bearer": []}]
        else:
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("401", None)
        app.openapi_schema = schema
    return app.openapi_schema


def _planner_maxima(components: dict[str, Any], limits: dict[str, float]) -> None:
    """This server's limits as each planner setting's schema maximum, so that OpenAPI-driven clients and
    fuzzers send what it accepts (the schema models carry only the fixed bounds)."""
    def tighten(prop: dict[str, Any], limit: float) -> None:
        prop["maximum"] = min(limit, prop.get("maximum", limit))

    driver = components["PlannerOverrides"]["properties"]
    for path, limit in limits.items():
        section, _, name = path.rpartition(".")
        props = components[section_schema_name(section)]["properties"] if section else driver
        if name in props:
            tighten(props[name], limit)
    for old, paths in legacy_names().items():
        bounded = [limits[p] for p in paths if p in limits]
        if bounded and old in driver:
            tighten(driver[old], min(bounded))


def _docs_router(app: FastAPI) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/openapi.json")
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @router.get("/docs")
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    return router
