"""Async client for the tiers' OpenAI-compatible endpoints.

aiohttp rather than httpx: measured on this machine, httpx's connection pool was 6-12x slower under
concurrency (FIELD-NOTES), and the pool decides most of a proxy's overhead. One session with pooled
keep-alive connections serves every tier. Streams are relayed event by event, never buffered whole.
"""

from __future__ import annotations

import asyncio
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
    """An open streamed response; iterate `events()`, and always `close()` (done in a finally)."""

    __slots__ = ("_resp",)

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    async def batches(self) -> AsyncIterator[list[bytes]]:
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
            raise UpstreamFailed("The tier's stream broke off.") from None

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
            raise UpstreamFailed(f"Could not reach the tier ({type(err).__name__}).") from None
        if status >= 400:
            raise upstream_error(status, data)
        return UpstreamReply(status, data)

    async def open_stream(self, url: str, body: bytes, *, timeout_s: float) -> UpstreamStream:
        """POST a streaming request and return once the tier has answered with its headers."""
        try:
            resp = await self.session.post(url, data=body, headers=_SSE_HEADERS, timeout=self._timeout(timeout_s))
        except TimeoutError:
            raise UpstreamTimeout(f"The tier did not answer within {timeout_s:g} s.") from None
        except aiohttp.ClientError as err:
            raise UpstreamFailed(f"Could not reach the tier ({type(err).__name__}).") from None
        if resp.status >= 400:
            try:
                data = await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                data = b""
            finally:
                resp.close()
            raise upstream_error(resp.status, data)
        return UpstreamStream(resp)

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


def upstream_error(status: int, data: bytes) -> HTTPError:
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
        return UpstreamFailed(f"The tier failed: {message}")
    if status == 404:
        return UpstreamFailed(f"The tier does not serve the configured model: {message}")
    return UpstreamRejected(status, message, param=param, code=code)
