"""Async client for the tiers' OpenAI-compatible endpoints.

aiohttp rather than httpx: measured on this machine, httpx's connection pool was 6-12x slower under
concurrency (FIELD-NOTES), and the pool decides most of a proxy's overhead. One session with pooled
keep-alive connections serves every tier. Streams are relayed event by event, never buffered whole.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from gateway.errors import HTTPError, UpstreamFailed, UpstreamRejected, UpstreamTimeout

_JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
_SSE_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}


@dataclass(slots=True)
class UpstreamReply:
    status: int
    body: bytes


class UpstreamStream:
    """An open streamed response; iterate `batches()`, and always `close()` (done in a finally)."""

    __slots__ = ("_first", "_reads", "_resp")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self._reads = self._read()
        self._first: list[bytes] | None = None

    async def first(self) -> None:
        """Read the tier's first event before anything is sent to the caller, so a tier that breaks
        off straight after its headers can still be retried or replaced (gateway/resilience.py)."""
        try:
            self._first = await self._reads.__anext__()
        except StopAsyncIteration:
            raise UpstreamFailed("The tier ended its stream before its first event.", fault="broken") from None

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """The batches of `data:` payloads, starting with the one `first()` read."""
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        async for batch in self._reads:
            yield batch

    async def _read(self) -> AsyncIterator[list[bytes]]:
        """Yield the SSE `data:` payloads (b'[DONE]' included) that each network read completed.

        Batching by read rather than by event lets a fast tier's burst of tokens cost one write
        to the caller instead of one per token; a slow tier's tokens still go out one by one, as
        they arrive. (OpenAI-style streams put each event's JSON on a single `data:` line.)
        """
        pending = b""
        try:
            async for data in self._resp.content.iter_any():
                *lines, pending = (pending + data).split(b"\n")
                payloads = [line[5:].strip() for line in lines if line.startswith(b"data:")]
                if payloads:
                    yield payloads
            if pending.startswith(b"data:"):
                yield [pending[5:].strip()]
        except TimeoutError:
            raise UpstreamTimeout("The tier stopped sending before the stream finished.") from None
        except aiohttp.ClientError:
            raise UpstreamFailed("The tier's stream broke off.", fault="broken") from None

    def close(self) -> None:
        # close(), not release(): a half-read stream must drop its connection so the tier sees the
        # disconnect and stops generating.
        self._resp.close()


class UpstreamClient:
    def __init__(self, *, pool_size: int, connect_timeout_s: float) -> None:
        self._pool_size = pool_size
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._pool_size, limit_per_host=0, keepalive_timeout=60.0, ttl_dns_cache=300
        )
        # The response body is bytes we parse ourselves with orjson; aiohttp's json helpers are unused.
        self._session = aiohttp.ClientSession(
            # No skip_auto_headers: any value there sends aiohttp down a slow path that rebuilds a
            # header multidict per request (~7% of the gateway's CPU when measured).
            connector=connector,
            auto_decompress=True,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        return self._session

    def _connect_only(self) -> aiohttp.ClientTimeout:
        return self._timeout(None)

    def _timeout(self, total_s: float | None) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(total_s)
        if timeout is None:
            connect = self._connect_timeout_s if total_s is None else min(self._connect_timeout_s, total_s)
            timeout = aiohttp.ClientTimeout(total=total_s, sock_connect=connect)
            self._timeouts[total_s] = timeout
        return timeout

    async def complete(self, url: str, body: bytes, *, timeout_s: float) -> UpstreamReply:
        """POST a non-streaming request; 4xx become UpstreamRejected, 5xx UpstreamFailed."""
        try:
            # asyncio.timeout costs one timer; aiohttp's total timeout builds a handle, a timer
            # context and callbacks per request (~8% of the gateway's CPU when measured).
            async with (
                asyncio.timeout(timeout_s),
                self.session.post(url, data=body, headers=_JSON_HEADERS, timeout=self._connect_only()) as resp,
            ):
                data = await resp.read()
                status = resp.status
        except TimeoutError:
            raise UpstreamTimeout(f"The tier did not answer within {timeout_s:g} s.") from None
        except aiohttp.ClientError as err:
            raise _unreachable(err) from None
        if status >= 400:
            raise upstream_error(status, data, resp.headers.get("retry-after"))
        return UpstreamReply(status, data)

    async def open_stream(
        self, url: str, body: bytes, *, timeout_s: float, first_event_s: float | None = None
    ) -> UpstreamStream:
        """POST a streaming request and return once the tier has sent its headers and first event.

        `timeout_s` bounds the whole stream; `first_event_s` (default: `timeout_s`) bounds the wait
        for the headers and the first event, the part a retry or a fallback can still replace.
        """
        first_s = timeout_s if first_event_s is None else min(first_event_s, timeout_s)
        resp: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout(first_s):
                # Built per stream, not cached: the bound is what is left of each request's deadline,
                # a different number every time.
                bound = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(self._connect_timeout_s, timeout_s))
                resp = await self.session.post(url, data=body, headers=_SSE_HEADERS, timeout=bound)
                if resp.status >= 400:
                    try:
                        data = await resp.read()
                    except (TimeoutError, aiohttp.ClientError):
                        data = b""
                    raise upstream_error(resp.status, data, resp.headers.get("retry-after"))
                stream = UpstreamStream(resp)
                await stream.first()
        except TimeoutError:
            if resp is not None:
                resp.close()
            raise UpstreamTimeout(f"The tier did not start its answer within {first_s:g} s.") from None
        except aiohttp.ClientError as err:
            if resp is not None:
                resp.close()
            raise _unreachable(err) from None
        except BaseException:
            if resp is not None:
                resp.close()
            raise
        return stream

    async def get_json(self, url: str, *, timeout_s: float) -> Any:
        """GET for health probes; raises UpstreamFailed/UpstreamTimeout."""
        try:
            async with self.session.get(url, timeout=self._timeout(timeout_s)) as resp:
                data = await resp.read()
                if resp.status >= 400:
                    raise UpstreamFailed(f"probe answered {resp.status}")
        except TimeoutError:
            raise UpstreamTimeout("probe timed out") from None
        except aiohttp.ClientError as err:
            raise UpstreamFailed(f"probe failed ({type(err).__name__})") from None
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamFailed("probe answer is not JSON") from None


def _unreachable(err: aiohttp.ClientError) -> UpstreamFailed:
    # A refused or failed connection never reached the tier; anything else broke off mid-answer.
    fault = "connect" if isinstance(err, aiohttp.ClientConnectorError) else "broken"
    return UpstreamFailed(f"Could not reach the tier ({type(err).__name__}).", fault=fault)


def retry_after_seconds(value: str | None, now_s: float | None = None) -> float | None:
    """A `Retry-After` header in seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now_s is None else now_s)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def upstream_error(status: int, data: bytes, retry_after: str | None = None) -> HTTPError:
    """Map a tier's error response to the gateway's tree, keeping the tier's message when it has one."""
    message, param, code = f"The tier answered HTTP {status}.", None, None
    try:
        parsed = orjson.loads(data) if data else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        err = parsed.get("error", parsed)
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            param = err.get("param") if isinstance(err.get("param"), str) else None
            code = str(err["code"]) if err.get("code") is not None else None
    if status in (408, 429) or status >= 500:
        # A tier that is overloaded or broken is the tier's fault, never the caller's.
        fault = "status_429" if status == 429 else "status_5xx" if status >= 500 else "timeout"
        return UpstreamFailed(
            f"The tier failed: {message}", fault=fault, retry_after_s=retry_after_seconds(retry_after)
        )
    if status == 404:
        # The tier's fault (it was configured to serve this model), but asking again cannot help.
        return UpstreamFailed(f"The tier does not serve the configured model: {message}", fault="misconfigured")
    return UpstreamRejected(status, message, param=param, code=code)
