"""HTTP routes. Each handler is a line or two; the work happens in the service and registry."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.metrics import CONTENT_TYPE
from gateway.state import AppState

router = APIRouter()


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.tiergate
    return state


def _json(data: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _state(request).service.chat_completions(request)


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
