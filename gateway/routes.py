"""HTTP routes. Each handler is a line or two; the work happens in the service and registry."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.metrics import CONTENT_TYPE
from gateway.state import AppState

router = APIRouter()


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.tiergate
    return state


def _json(data: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


class ChatCompletionsEndpoint:
    """POST /v1/chat/completions as a plain ASGI endpoint.

    The hot path skips FastAPI's per-request dependency machinery (two exit stacks and dependency
    solving), which measured ~40 us of a ~250 us request on this machine; errors still travel
    through the app's exception handlers like any other route's.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        response = await _state(request).service.chat_completions(request)
        await response(scope, receive, send)


chat_route = Route("/v1/chat/completions", ChatCompletionsEndpoint(), methods=["POST"])


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    return _json(_state(request).model_list(int(time.time())))


@router.get("/healthz")
async def healthz() -> Response:
    return _json({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    ready, body = _state(request).readiness()
    return _json(body, 200 if ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE)
