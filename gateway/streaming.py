"""Server-sent events response that notices a departed client even between tokens.

Starlette's StreamingResponse only learns of a disconnect when its next write fails, so a caller
who leaves during a long prefill would keep the tier busy. Here a watcher task waits for the
disconnect message and cancels the relay at once, which closes the upstream connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.disconnect import DisconnectWatch
from gateway.middleware import RequestContext

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Proxies such as nginx buffer responses unless told not to; tokens must flow as they come.
    (b"x-accel-buffering", b"no"),
]


class SSEResponse(Response):
    def __init__(
        self, chunks: AsyncIterator[bytes], ctx: RequestContext, on_close: Callable[[], None] | None = None
    ) -> None:
        # Response.__init__ is skipped on purpose: headers are sent raw below.
        self.chunks = chunks
        self.ctx = ctx
        self.on_close = on_close
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with DisconnectWatch(receive) as watch:
                await send({"type": "http.response.start", "status": 200, "headers": list(_SSE_HEADERS)})
                async for chunk in self.chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.ctx.client_closed = watch.gone
        except OSError:
            # The transport failed under us: the same as a departed client.
            self.ctx.client_closed = True
        finally:
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()
            if self.on_close is not None:
                self.on_close()
