"""HTTP routes. Each handler is a line or two; the work happens in the service and registry."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from deployments.profile import LATENCY_CLASSES, ProfileError, RoutingSpec
from gateway.affinity import HEADER as AFFINITY_HEADER
from gateway.budgets import MAX_BUDGET_MS, SLO_TOTAL_HEADER, SLO_TTFT_HEADER
from gateway.errors import (
    AuthenticationFailed,
    HTTPError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    UpstreamFailed,
    UpstreamTimeout,
    render,
)
from gateway.metrics import CONTENT_TYPE
from gateway.middleware import ADMIN_PREFIX, OPEN_PATHS
from gateway.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ErrorResponse
from gateway.routing import LATENCY_HEADER
from gateway.service import ChatService
from gateway.state import AppState

router = APIRouter()


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.tiergate
    return state


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(data: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


class ChatEndpoint:
    """POST /v1/chat/completions, defined once: its handling, its 405 and its OpenAPI entry.

    Installed as the innermost middleware rather than as a route: the chat request skips FastAPI's
    exception and exit-stack middleware, route matching and dependency solving, which it does not
    use and which measured ~40 us of a ~250 us request on this machine. Every other request goes
    through FastAPI's router as usual. Its errors are rendered here by the one renderer; anything
    unexpected still reaches the app's outermost error handler (an OpenAI-shaped 500).
    """

    path = "/v1/chat/completions"
    # The leaves a chat request can end in, documented in the OpenAPI entry.
    errors: tuple[type[HTTPError], ...] = (
        InvalidRequest,
        AuthenticationFailed,
        NotFound,
        PayloadTooLarge,
        InternalError,
        UpstreamFailed,
        RateLimited,
        Overloaded,
        UpstreamTimeout,
    )

    def __init__(self, app: ASGIApp, *, service: ChatService) -> None:
        self.app = app
        self.service = service

    @classmethod
    def install(cls, app: FastAPI, service: ChatService) -> None:
        """Serve the chat path on `app`; call before adding any other middleware (this one is innermost).

        The route is listed in the app's route table so that whatever walks it (the auth test, the
        docs) sees the endpoint; requests never reach it, since the middleware answers first.
        """
        app.router.routes.append(Route(cls.path, _ServeChat(service), methods=["POST"]))
        app.add_middleware(cls, service=service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed("Method not allowed for this route.", headers={"allow": "POST"})
            await self.service.serve(scope, receive, send)
        except HTTPError as err:
            await render(err)(scope, receive, send)

    @classmethod
    def openapi_path(cls, components: dict[str, Any]) -> dict[str, Any]:
        """The path item, from the pydantic models; their schemas are added to `components`."""

        def ref(model: type[BaseModel]) -> dict[str, str]:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
            return {"$ref": f"#/components/schemas/{model.__name__}"}

        error = ref(ErrorResponse)
        responses: dict[str, Any] = {
            "200": {
                "description": "A chat.completion object, or a text/event-stream of chat.completion.chunk events",
                "content": {
                    "application/json": {"schema": ref(ChatCompletion)},
                    "text/event-stream": {"schema": _sse_event(ref(ChatCompletionChunk), error)},
                },
            }
        }
        for leaf in cls.errors:
            responses[str(leaf.status_code)] = {
                "description": f"{leaf.__name__} ({leaf.error_type})",
                "content": {"application/json": {"schema": error}},
            }
        operation = {
            "summary": "Create a chat completion (model=auto routes; a tier name pins it)",
            "operationId": "create_chat_completion",
            "parameters": [
                {
                    "name": LATENCY_HEADER,
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "enum": list(LATENCY_CLASSES)},
                },
                *(
                    {
                        "name": name,
                        "in": "header",
                        "required": False,
                        "description": "This request's latency budget in ms, over its latency class's.",
                        "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_BUDGET_MS},
                    }
                    for name in (SLO_TTFT_HEADER, SLO_TOTAL_HEADER)
                ),
                {
                    "name": AFFINITY_HEADER,
                    "in": "header",
                    "required": False,
                    "description": "Turns of one conversation start no lower than the tier that answered it before.",
                    "schema": {"type": "string"},
                },
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref(ChatCompletionRequest)}}},
            "responses": responses,
        }
        return {"post": operation}


def _sse_event(chunk: dict[str, str], error: dict[str, str]) -> dict[str, Any]:
    """One server-sent event of a streamed answer: its `data` is a chunk as JSON, an OpenAI-shaped
    error (a tier that failed mid-stream), or the closing `[DONE]`."""
    json_data = {"contentMediaType": "application/json", "contentSchema": {"anyOf": [chunk, error]}}
    return {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"type": "string", "if": {"const": "[DONE]"}, "then": True, "else": json_data}},
    }


class _ServeChat:
    """The chat route's endpoint: what the middleware does for POST, had a request got past it."""

    def __init__(self, service: ChatService) -> None:
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.service.serve(scope, receive, send)


def _errors(*leaves: type[HTTPError]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries of the errors a route can answer, each in the one error shape."""
    return {leaf.status_code: {"model": ErrorResponse, "description": leaf.__name__} for leaf in leaves}


# Request bodies of handlers that read the raw body themselves; their schemas join the components.
_BODY_MODELS: list[type[BaseModel]] = []


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """An OpenAPI request body (for `openapi_extra`) naming `model`, whose schema document_auth adds."""
    _BODY_MODELS.append(model)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": _ref(model)}}}}


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    return _json(_state(request).model_list(int(time.time())))


@router.get("/healthz")
async def healthz() -> Response:
    return _json({"status": "ok"})


@router.get("/readyz", responses={503: {"description": "No tier is ready (the body says which is not, and why)"}})
async def readyz(request: Request) -> Response:
    ready, body = _state(request).readiness()
    if request.app.state.drain.draining:
        # Shutting down: take this process out of the balancer first (gateway.drain).
        ready, body = False, {**body, "status": "draining"}
    return _json(body, 200 if ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text exposition", "content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}
    },
)
async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE)


@router.post(
    "/admin/route-preview",
    responses=_errors(InvalidRequest, NotFound, PayloadTooLarge),
    openapi_extra=_json_body(ChatCompletionRequest),
)
async def route_preview(request: Request) -> Response:
    """What model=auto would do with this chat request now (tier, ladder, scores, estimates); calls no tier."""
    return _json(_state(request).service.preview(request.headers, await request.body()))


@router.get("/admin/policy")
async def get_policy(request: Request) -> Response:
    """The routing section in force (thresholds, cascade, latency classes)."""
    return _json(_state(request).profile.routing.model_dump(mode="json"))


@router.put("/admin/policy", responses=_errors(InvalidRequest, PayloadTooLarge), openapi_extra=_json_body(RoutingSpec))
async def put_policy(request: Request) -> Response:
    """Replace the routing section; validated against the tiers, applied to the next request."""
    try:
        routing = RoutingSpec.model_validate_json(await request.body())
        await _state(request).publish_routing(routing)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"routing{'.' if where else ''}{where}: {first['msg']}", param=where or None) from None
    except ProfileError as err:
        raise InvalidRequest(str(err)) from None
    return _json(_state(request).profile.routing.model_dump(mode="json"))


def finish_openapi(schema: dict[str, Any], *, api_keys: bool, models: list[str]) -> None:
    """Complete FastAPI's document: the chat path, the raw-body schemas, the served `models` as the
    `model` field's examples, and which operations need which bearer key as AuthMiddleware enforces
    it (the admin key for ADMIN_PREFIX, always; an API key for the rest but OPEN_PATHS, when keys
    are set)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    schema["paths"][ChatEndpoint.path] = ChatEndpoint.openapi_path(components)
    for model in _BODY_MODELS:
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    components[ChatCompletionRequest.__name__]["properties"]["model"]["examples"] = models
    auth = {
        "description": AuthenticationFailed.__name__,
        "content": {"application/json": {"schema": _ref(ErrorResponse)}},
    }
    schemes = schema["components"].setdefault("securitySchemes", {})
    schemes["adminKey"] = {"type": "http", "scheme": "bearer", "description": "gateway.admin_key"}
    if api_keys:
        schemes["apiKey"] = {"type": "http", "scheme": "bearer", "description": "gateway.api_keys"}
    for path, item in schema.get("paths", {}).items():
        scheme = "adminKey" if path.startswith(ADMIN_PREFIX) else None
        if scheme is None and api_keys and path not in OPEN_PATHS:
            scheme = "apiKey"
        if scheme is None:
            continue
        for operation in item.values():
            operation["security"] = [{scheme: []}]
            operation.setdefault("responses", {}).setdefault(str(AuthenticationFailed.status_code), auth)


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route of `app` serves at this request's path (for a 405's `Allow`)."""
    methods: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, Route) and route.matches(scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)
