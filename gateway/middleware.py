"""Cross-cutting concerns as pure ASGI middleware, in this order (outermost first):

1. RequestContextMiddleware: request id, start time, the x-tiergate-* headers on every response,
   request metrics and the one structured access-log line.
2. AuthMiddleware: bearer keys, constant-time comparison of digests; only OPEN_PATHS pass without one.
3. QuotaMiddleware (gateway/access.py): per-key rate limits and spend budgets on the chat path.
4. BodyLimitMiddleware: a declared Content-Length over the limit is a 413 before any byte is read
   (chunked bodies are counted while reading, in the service).

Pure ASGI rather than BaseHTTPMiddleware: the latter adds a task and a memory stream per request,
which costs more than the gateway's whole overhead budget.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.keys import key_id as key_id  # re-exported: logs and metrics name keys by this id
from gateway.context import SCOPE_KEY, RequestContext, context_of
from gateway.errors import AuthenticationFailed, PayloadTooLarge, render
from gateway.metrics import GatewayMetrics

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
ADMIN_PREFIX = "/admin/"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: GatewayMetrics,
        access_sink: Callable[[str], None] | None,
        metered_path: str,
    ) -> None:
        """`metered_path`: the one path whose requests the request metrics count (the chat endpoint)."""
        self.app = app
        self.metered_path = metered_path
        self.metrics = metrics
        self.access_sink = access_sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        given = _header(scope, b"x-request-id")
        rid = given.decode("latin-1") if given and _REQUEST_ID.match(given.decode("latin-1")) else None
        ctx = RequestContext(request_id=rid or os.urandom(8).hex(), t0=t0)
        scope[SCOPE_KEY] = ctx

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                ctx.status = message["status"]
                overhead_ms = (time.perf_counter() - t0 - ctx.upstream_s) * 1000.0
                headers = list(message.get("headers", []))
                headers.append((b"x-tiergate-request-id", ctx.request_id.encode()))
                headers.append((b"x-tiergate-tier", (ctx.tier or "none").encode()))
                headers.append((b"x-tiergate-overhead-ms", f"{overhead_ms:.3f}".encode()))
                headers.extend(ctx.extra_headers)
                headers.extend(ctx.outcome_headers())
                message["headers"] = headers
            await send(message)

        is_chat = scope["path"] == self.metered_path
        if is_chat:
            self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            total_s = time.perf_counter() - t0
            status = 499 if ctx.client_closed else ctx.status or 500
            if is_chat:
                self.metrics.in_flight.dec()
                self.metrics.observe(
                    ctx.tier,
                    status,
                    total_s=total_s,
                    ttft_s=ctx.ttft_s,
                    overhead_s=max(total_s - ctx.upstream_s, 0.0),
                    prompt_tokens=ctx.prompt_tokens,
                    completion_tokens=ctx.completion_tokens,
                    inter_token_s=ctx.inter_token_s(),
                )
            if self.access_sink is not None:
                self.access_sink(_access_line(scope, ctx, status, total_s))


def _access_line(scope: Scope, ctx: RequestContext, status: int, total_s: float) -> str:
    # Never the prompt, never the key: the key id is a short hash fixed at start-up.
    return orjson.dumps(
        {
            "ts": round(time.time(), 3),
            "request_id": ctx.request_id,
            "key_id": ctx.key_id,
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "tier": ctx.tier,
            "latency_class": ctx.latency_class,
            "route_reason": ctx.route_reason,
            "stream": ctx.stream,
            "prompt_tokens": ctx.prompt_tokens,
            "completion_tokens": ctx.completion_tokens,
            "ttft_ms": None if ctx.ttft_s is None else round(ctx.ttft_s * 1000.0, 3),
            "total_ms": round(total_s * 1000.0, 3),
            "overhead_ms": round(max(total_s - ctx.upstream_s, 0.0) * 1000.0, 3),
            "error_code": ctx.error_code,
        }
    ).decode()


class AuthMiddleware:
    """API keys for the API; the admin key, and only it, for ADMIN_PREFIX (refused when none is set).

    Keys are held as SHA-256 digests (`keys`: digest and key id; gateway.access.stored_keys): the
    presented key is hashed once and compared with every digest, so a profile may store hashes only.
    """

    def __init__(self, app: ASGIApp, *, keys: list[tuple[bytes, str]], admin_digest: bytes | None = None) -> None:
        self.app = app
        self._keys = keys
        self._admin = admin_digest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(ADMIN_PREFIX):
            presented = _bearer(_header(scope, b"authorization"))
            if (
                self._admin is None
                or presented is None
                or not hmac.compare_digest(hashlib.sha256(presented).digest(), self._admin)
            ):
                message = "Admin routes need the admin key." if self._admin else "Admin routes are off: no admin_key."
                await render(AuthenticationFailed(message))(scope, receive, send)
                return
            context_of(scope).authenticated("admin")
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http" or not self._keys or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        presented = _bearer(_header(scope, b"authorization"))
        matched: str | None = None
        if presented is not None:
            digest = hashlib.sha256(presented).digest()
            # Compare against every key without stopping early, so timing reveals nothing.
            for stored, kid in self._keys:
                if hmac.compare_digest(digest, stored):
                    matched = kid
        if matched is None:
            await render(AuthenticationFailed())(scope, receive, send)
            return
        context_of(scope).authenticated(matched)
        await self.app(scope, receive, send)


def _bearer(value: bytes | None) -> bytes | None:
    if not value:
        return None
    scheme, _, token = value.partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip()


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = _header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                too_large = PayloadTooLarge(f"Request body exceeds the limit of {self.max_body_bytes} bytes.")
                await render(too_large)(scope, receive, send)
                return
        await self.app(scope, receive, send)
