from __future__ import annotations

from collections.abc import AsyncIterator

from gateway.middleware import RequestContext
from gateway.streaming import SSEResponse


async def test_a_stream_torn_down_before_its_first_byte_still_gives_back_its_resources() -> None:
    started: list[bool] = []
    closed: list[bool] = []

    async def chunks() -> AsyncIterator[bytes]:
        started.append(True)
        yield b"data: {}\n\n"

    async def receive() -> dict[str, str]:
        return {"type": "http.request"}

    async def send(message: dict[str, object]) -> None:
        raise OSError("the caller is gone")

    ctx = RequestContext(request_id="r", t0=0.0)
    response = SSEResponse(chunks(), ctx, on_close=lambda: closed.append(True))
    await response({"type": "http"}, receive, send)  # type: ignore[arg-type]
    assert started == []  # the relay never ran, so its own cleanup never ran ...
    assert closed == [True]  # ... and the response's did
    assert ctx.client_closed
