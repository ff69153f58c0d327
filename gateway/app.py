"""The FastAPI application factory."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway import __version__, logs
from gateway.errors import HTTPError, InternalError, MethodNotAllowed, NotFound, render
from gateway.middleware import AuthMiddleware, BodyLimitMiddleware, RequestContextMiddleware
from gateway.protocol import ChatCompletionRequest
from gateway.routes import ChatFastPath, chat_route, router
from gateway.settings import GatewaySettings
from gateway.state import AppState
from router.runtime.policy import Scorer

log = logging.getLogger("tiergate")

_ERROR = {"description": "OpenAI-shaped error: {error: {message, type, param, code}}"}
_CHAT_OPERATION: dict[str, Any] = {
    "summary": "Create a chat completion (model=auto routes; a tier name pins it)",
    "operationId": "create_chat_completion",
    "parameters": [
        {
            "name": "x-tiergate-latency-class",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "enum": ["realtime", "interactive", "batch"]},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}},
    },
    "responses": {
        "200": {
            "description": "A chat.completion object, or a text/event-stream of chat.completion.chunk events",
            "content": {"application/json": {}, "text/event-stream": {}},
        },
        **{code: _ERROR for code in ("400", "401", "404", "413", "502", "503", "504")},
    },
}


def create_app(
    settings: GatewaySettings,
    *,
    scorer: Scorer | None = None,
    access_sink: Callable[[str], None] | None = None,
) -> FastAPI:
    """The gateway app. `scorer` replaces the profile's (tests); `access_sink` receives one JSON
    access line per request (default: the `tiergate.access` logger, when enabled)."""
    profile = settings.profile
    state = AppState(profile, scorer)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.start(settings.probe_interval_s)
        # Everything built so far (routes, pydantic models, the scorer) lives as long as the process:
        # move it out of the collector's sight. Full collections then scan only per-request garbage,
        # which took p99 at 32 concurrent requests from ~52 ms to ~21 ms on this machine.
        gc.collect()
        gc.freeze()
        if not profile.gateway.api_keys:
            log.warning("no API keys configured: every route is open (fine on loopback, not beyond)")
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="tiergate",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.tiergate = state
    app.router.routes.append(chat_route)
    app.include_router(router)

    @app.exception_handler(HTTPError)
    async def _tiergate_error(_: Request, exc: HTTPError) -> Response:
        return render(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            return render(MethodNotAllowed("Method not allowed for this route."))
        if exc.status_code == 404:
            return render(NotFound("No such route.", code="not_found"))
        return render(InternalError(str(exc.detail)), {"x-status": str(exc.status_code)})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return render(InternalError("Internal error in the gateway."))

    def openapi() -> dict[str, Any]:
        # The chat route is a plain ASGI endpoint (see routes.py), so FastAPI cannot describe it;
        # describe it here from the same pydantic model that validates requests.
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {})
            body_schema = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in body_schema.pop("$defs", {}).items():
                schema["components"]["schemas"][name] = sub
            schema["components"]["schemas"]["ChatCompletionRequest"] = body_schema
            schema["paths"]["/v1/chat/completions"] = {"post": _CHAT_OPERATION}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # add_middleware puts each new layer outside the previous: this reads innermost first.
    gw = profile.gateway
    app.add_middleware(ChatFastPath)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=gw.max_body_bytes)
    app.add_middleware(AuthMiddleware, api_keys=[k.get_secret_value() for k in gw.api_keys])
    sink = (access_sink or logs.logger_sink()) if gw.access_log else None
    app.add_middleware(RequestContextMiddleware, metrics=state.metrics, access_sink=sink)
    return app


def app_from_env() -> FastAPI:
    """uvicorn's factory for worker processes: settings come through gateway.settings.SETTINGS_ENV."""
    settings = GatewaySettings.from_env(os.environ)
    sink = None
    if settings.log_level is not None:
        # Here, not in `tiergate serve`: uvicorn sets up its own loggers in each worker first.
        sink = logs.configure(settings.log_level, access_log=settings.profile.gateway.access_log)
    return create_app(settings, access_sink=sink)
