from __future__ import annotations

from collections.abc import AsyncIterator

from gateway.context import RequestContext
from gateway.streaming import SSEResponse


async def test_a_stream_torn_down_before_its_first_byte_never_runs_its_relay_and_counts_as_a_departed_caller() -> None:
    # That the request's connection and KV budget still come back is the lease's guarantee:
    # see tests/unit/test_lease.py::test_every_exit_path_releases_the_lease (torn-down-before-first-byte).
    started: list[bool] = []

    async def chunks() -> AsyncIterator[bytes]:
        started.append(True)
        yield b"data: {}\n\n"

    async def receive() -> dict[str, str]:
        return {"type": "http.request"}

    async def send(message: dict[str, object]) -> None:
        raise OSError("the caller is gone")

    ctx = RequestContext(request_id="r", t0=0.0)
    response = SSEResponse(chunks(), ctx)
    await response({"type": "http"}, receive, send)  # type: ignore[arg-type]
    assert started == []  # the relay never ran, so its own cleanup never ran
    assert ctx.client_closed
