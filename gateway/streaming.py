"""Streaming answers: the SSE relay from the tier to the caller, and the response that carries it.

The relay renames the model, keeps usage for metrics and turns a tier that breaks off mid-stream
into an OpenAI error event (the headers are already gone).

Starlette's StreamingResponse only learns of a disconnect when its next write fails, so a caller
who leaves during a long prefill would keep the tier busy. SSEResponse runs a watcher that waits for
the disconnect message and cancels the relay at once; the request's lease then closes the upstream
connection (see gateway.admission.Lease).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.context import RequestContext
from gateway.disconnect import DisconnectWatch
from gateway.errors import HTTPError, UpstreamFailed, error_body
from gateway.upstream import UpstreamStream

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Proxies such as nginx buffer responses unless told not to; tokens must flow as they come.
    (b"x-accel-buffering", b"no"),
]


class SSEResponse(Response):
    def __init__(self, chunks: AsyncIterator[bytes], ctx: RequestContext) -> None:
        # Response.__init__ is skipped on purpose: headers are sent raw below.
        self.chunks = chunks
        self.ctx = ctx
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with DisconnectWatch(receive) as watch:
                await send({"type": "http.response.start", "status": 200, "headers": list(_SSE_HEADERS)})
                async for chunk in self.chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            if watch.gone:
                self.ctx.client_left()
        except OSError:
            # The transport failed under us: the same as a departed client.
            self.ctx.client_left()
        finally:
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()


async def relay(
    ctx: RequestContext,
    stream: UpstreamStream,
    tier_name: str,
    wants_usage: bool,
    on_fault: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    """Relay the tier's SSE events, renaming the model and keeping usage for metrics.

    A tier that fails mid-stream (broken connection, timeout, or an end without `[DONE]`) ends the
    caller's stream with an OpenAI error event and then `data: [DONE]`, so SDKs raise instead of
    waiting; `on_fault` tells the tier's circuit breaker. No other tier can take over: the caller
    already has part of this one's answer.

    Closing the stream is not its job: a relay torn down before its first step never runs its own
    cleanup, so the request's lease owns the connection.
    """
    batches = stream.batches().__aiter__()
    done = False
    try:
        while True:
            t = time.perf_counter()
            try:
                payloads = await batches.__anext__()
            except StopAsyncIteration:
                break
            finally:
                arrived = ctx.waited_since(t)
            done = done or b"[DONE]" in payloads
            data = b"".join([_relay_event(ctx, payload, tier_name, wants_usage, arrived) for payload in payloads])
            if data:
                yield data
        if not done:
            raise UpstreamFailed("The tier ended its stream before it was finished.", fault="broken")
    except HTTPError as err:
        # Headers are gone; the OpenAI SDK raises on an event carrying an "error" object.
        ctx.failed(err)
        if on_fault is not None and err.counts_as_tier_failure:
            on_fault()
        yield b"data: " + error_body(err) + b"\n\ndata: [DONE]\n\n"


def _relay_event(ctx: RequestContext, payload: bytes, tier_name: str, wants_usage: bool, arrived: float) -> bytes:
    if payload == b"[DONE]":
        return b"data: [DONE]\n\n"
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return b"data: " + payload + b"\n\n"
    if not isinstance(obj, dict):
        return b"data: " + payload + b"\n\n"
    if obj.get("choices"):
        ctx.token_relayed(arrived)
    if "model" in obj:
        obj["model"] = tier_name
    usage = obj.get("usage")
    if usage:
        ctx.count_usage(usage)
    if not wants_usage:
        # tiergate asked the tier for usage to meter tokens; the caller did not, so it gets the
        # stream it asked for: no usage-only chunk, no usage field.
        if not obj.get("choices") and usage:
            return b""
        obj.pop("usage", None)
    return b"data: " + orjson.dumps(obj) + b"\n\n"
