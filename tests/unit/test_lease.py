"""A request's lease on its tier (KV budget + open stream) comes back exactly once, however it ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import orjson
import pytest

from deployments.profile import load_profile
from gateway.admission import TierAdmission
from gateway.context import SCOPE_KEY, RequestContext
from gateway.errors import HTTPError, UpstreamFailed
from gateway.service import ChatService
from gateway.state import AppState
from gateway.upstream import UpstreamReply

CHUNK = b'{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}'
ANSWER = b'{"id":"c","object":"chat.completion","model":"m","choices":[],"usage":{"prompt_tokens":1}}'


def test_releasing_a_lease_twice_is_harmless() -> None:
    gate = TierAdmission("t", capacity_tokens=100)
    first, second = gate.try_lease(40), gate.try_lease(30)
    assert first is not None and second is not None
    closed: list[str] = []
    first.hold(lambda: closed.append("stream"))
    first.release()
    first.release()
    assert closed == ["stream"]
    # The second release of the first lease did not hand back the second lease's budget.
    assert gate.in_flight_tokens == 30 and gate.in_flight_seqs == 1
    second.release()
    assert gate.in_flight_tokens == 0 and gate.in_flight_seqs == 0


class FakeStream:
    """The UpstreamStream interface: batches of SSE payloads, and close()."""

    def __init__(self, batches: list[list[bytes]], *, breaks: bool = False, stalls: bool = False) -> None:
        self._batches = batches
        self._breaks = breaks
        self._stalls = stalls
        self.closed = 0

    async def batches(self) -> AsyncIterator[list[bytes]]:
        for batch in self._batches:
            yield batch
        if self._stalls:
            await asyncio.Event().wait()
        if self._breaks:
            raise UpstreamFailed("The tier's stream broke off.")

    def close(self) -> None:
        self.closed += 1


class FakeClient:
    """The UpstreamClient interface the service uses, answering from memory."""

    def __init__(self, *, fails: bool = False, stalls: bool = False, stream: FakeStream | None = None) -> None:
        self.fails, self.stalls, self.stream = fails, stalls, stream

    async def complete(self, url: str, body: bytes, *, timeout_s: float) -> UpstreamReply:
        if self.stalls:
            await asyncio.Event().wait()
        if self.fails:
            raise UpstreamFailed("The tier failed: boom")
        return UpstreamReply(200, ANSWER)

    async def open_stream(
        self, url: str, body: bytes, *, timeout_s: float, first_event_s: float | None = None
    ) -> FakeStream:
        if self.fails:
            raise UpstreamFailed("Could not reach the tier (ClientConnectorError).")
        assert self.stream is not None
        return self.stream


class Caller:
    """An ASGI caller: sends the body, then hangs up at once (`leaves`) or once the answer is complete."""

    def __init__(self, body: dict[str, Any], *, leaves: bool = False, send_fails: bool = False) -> None:
        self.body = orjson.dumps(body)
        self.leaves = leaves
        self.send_fails = send_fails
        self.sent: list[dict[str, Any]] = []
        self._sent_body = False
        self._done = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if not self._sent_body:
            self._sent_body = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        if not self.leaves:
            await self._done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if self.send_fails:
            raise OSError("the caller is gone")
        self.sent.append(dict(message))
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self._done.set()


def _chat(stream: bool) -> dict[str, Any]:
    return {"model": "small", "messages": [{"role": "user", "content": "hello"}], "stream": stream}


CASES = {
    "answered": (FakeClient(), Caller(_chat(False))),
    "tier-failed": (FakeClient(fails=True), Caller(_chat(False))),
    "caller-left-while-waiting": (FakeClient(stalls=True), Caller(_chat(False), leaves=True)),
    "streamed": (FakeClient(stream=FakeStream([[CHUNK], [b"[DONE]"]])), Caller(_chat(True))),
    "stream-refused": (FakeClient(fails=True), Caller(_chat(True))),
    "stream-broke-off": (FakeClient(stream=FakeStream([[CHUNK]], breaks=True)), Caller(_chat(True))),
    "caller-left-mid-stream": (FakeClient(stream=FakeStream([[CHUNK]], stalls=True)), Caller(_chat(True), leaves=True)),
    "torn-down-before-first-byte": (
        FakeClient(stream=FakeStream([[CHUNK], [b"[DONE]"]])),
        Caller(_chat(True), send_fails=True),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_every_exit_path_releases_the_lease(case: str) -> None:
    client, caller = CASES[case]
    state = AppState(load_profile("test-fake", apply_env=False))
    service = ChatService(
        state.profile,
        tiers=state.tiers,
        client=client,  # type: ignore[arg-type]
        scorer=state.scorer,
        metrics=state.metrics,
        admission=state.admission,
    )
    ctx = RequestContext(request_id="r", t0=time.perf_counter())
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
        SCOPE_KEY: ctx,
    }
    try:
        await asyncio.wait_for(service.serve(scope, caller.receive, caller.send), 5)
    except HTTPError:
        assert case in {"tier-failed", "stream-refused"}
    gate = state.admission["small"]
    assert gate.in_flight_tokens == 0 and gate.in_flight_seqs == 0
    if client.stream is not None:
        assert client.stream.closed == 1  # the tier's connection is closed exactly once too
    assert ctx.client_closed == (
        case in {"caller-left-while-waiting", "caller-left-mid-stream", "torn-down-before-first-byte"}
    )
