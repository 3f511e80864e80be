"""Build the FastAPI application: routers, error handlers, metrics, lifespan.

``create_app(settings)`` returns an app that starts listening at once and
loads the model in the background (``/health`` is 503 until it is ready).
Every error, whoever raises it, leaves through one function here and has the
body ``{"error": {"code", "message", "field"}}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image as PILImage
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.deps import require_api_key
from server.errors import ApiError, from_validation_errors
from server.images import ImageError
from server.metrics import Metrics
from server.routes import health, planning, sessions, stats
from server.runtime import Runtime
from server.schemas import PlanRequest, ReplanRequest
from server.sessions import SessionNotFound
from server.settings import Settings
from server.wire import encode, response_wire

log = logging.getLogger(__name__)
VERSION = "0.1.0"


def create_app(
    settings: Settings, on_fatal: Callable[[BaseException], None] | None = None
) -> FastAPI:
    """The planning server for ``settings``; ``on_fatal`` is called if the model fails to load."""
    runtime = Runtime(settings, on_fatal)
    # Pillow's own bomb check, aligned with ours (ours runs first on the header).
    PILImage.MAX_IMAGE_PIXELS = settings.max_image_pixels

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(runtime.load(), name="load-model"),
            asyncio.create_task(runtime.sweep_sessions(), name="sweep-sessions"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            runtime.close()

    app = FastAPI(
        title="World-model planning server",
        version=VERSION,
        description="CEM planning in the latent space of a DINO-WM-style world model. "
        "Bodies are JSON or msgpack; every error is {\"error\": {code, message, field}}.",
        lifespan=lifespan,
        # Served below behind the API key, like everything but /health.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime

    protected = [Depends(require_api_key)]
    app.include_router(health.router)
    app.include_router(stats.router, dependencies=protected)
    app.include_router(planning.router, dependencies=protected)
    app.include_router(sessions.router, dependencies=protected)
    app.include_router(_docs_router(app), dependencies=protected)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    _add_error_handlers(app, runtime.metrics)
    app.add_middleware(RequestMetrics, metrics=runtime.metrics)
    return app


# -- errors -------------------------------------------------------------------


def _add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    def respond(request: Request, error: ApiError) -> Response:
        metrics.record_error(endpoint_label(request.scope), error.code)
        body = {"error": {"code": error.code, "message": error.message, "field": error.field}}
        return encode(body, response_wire(request), error.status, error.headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return respond(request, exc)

    @app.exception_handler(ImageError)
    async def image_error(request: Request, exc: ImageError) -> Response:
        return respond(request, ApiError(422, exc.code, exc.message, exc.field))

    @app.exception_handler(SessionNotFound)
    async def session_not_found(request: Request, exc: SessionNotFound) -> Response:
        return respond(request, ApiError(404, exc.code, exc.message, "session_id"))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return respond(request, from_validation_errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        route = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            error = ApiError(404, "http.not_found", f"no endpoint {route}; see /openapi.json")
        elif exc.status_code == 405:
            error = ApiError(405, "http.method_not_allowed", f"{route} is not allowed; see /openapi.json")
        else:
            error = ApiError(exc.status_code, f"http.{exc.status_code}", str(exc.detail))
        error.headers.update(exc.headers or {})
        return respond(request, error)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        incident = uuid.uuid4().hex[:12]
        log.error("incident %s on %s %s", incident, request.method, request.url.path, exc_info=exc)
        metrics.record_error(endpoint_label(request.scope), "internal.error")
        body = {
            "error": {
                "code": "internal.error",
                "message": f"the server failed on this request (incident {incident}, logged); "
                "the server is still running",
                "field": None,
            }
        }
        return JSONResponse(body, status_code=500)


# -- metrics middleware -----------------------------------------------------------


def endpoint_label(scope: Scope) -> str:
    """``"POST /plan"`` for a routed request; ``"unmatched"`` bounds label cardinality."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return f"{scope.get('method', '?')} {path}" if path else "unmatched"


class RequestMetrics:
    """Stamps the arrival time and counts every response by endpoint and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["received_at"] = time.monotonic()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.record_response(endpoint_label(scope), status)


# -- OpenAPI ------------------------------------------------------------------


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the request bodies that ``body_of`` parses by hand."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (PlanRequest, ReplanRequest):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        app.openapi_schema = schema
    return app.openapi_schema


def _docs_router(app: FastAPI) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/openapi.json")
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @router.get("/docs")
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    return router
