"""A simulated OpenAI-compatible engine over real HTTP, for tests and benchmarks.

It speaks the same protocol a vLLM server does (chat completions, streamed or not, usage, token
logprobs, /v1/models) with settable timing and failure rate. Built on aiohttp's server so the
benchmark's "upstream directly" baseline is as fast as the machine allows.

Faults for the gateway's retry, fallback and breaker tests are set at start (`FakeConfig`) or while
it runs (`POST /fake/faults`): fail the next N requests with a status (and a `Retry-After`), hang the
next N requests, or cut the connection of the next N streams after K chunks.

With `FakeConfig.replay` set it answers with recorded answers from an outcome table instead, at a
planner's latency and a finite capacity; that mode lives in `gateway.replay_tier`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from gateway.replay_tier import ReplayConfig, ReplayTier

_WORDS = (
    "The",
    " capital",
    " of",
    " France",
    " is",
    " Paris",
    ".",
    " It",
    " lies",
    " on",
    " the",
    " Seine",
    ".",
)


@dataclass
class FakeConfig:
    ttft_ms: float = 0.0
    token_delay_ms: float = 0.0
    reply_tokens: int = 16
    failure_rate: float = 0.0
    failure_status: int = 500
    # Models listed by /v1/models; empty means "any model is served".
    models: list[str] = field(default_factory=list)
    seed: int | None = None
    # Like vLLM: prompt + max_tokens beyond this is a 400 naming max_tokens; 0 means no limit.
    max_context_tokens: int = 0
    # Answer from an outcome table (gateway.replay_tier) instead of the fixed words above.
    replay: ReplayConfig | None = None
    # Fault injection: the first `fail_first` requests answer `failure_status` (with `retry_after` as
    # its Retry-After header when set); with `break_after_chunks` set, every stream is cut after that
    # many chunks (the connection dropped, no [DONE]).
    fail_first: int = 0
    retry_after: str | None = None
    break_after_chunks: int | None = None


@dataclass
class Faults:
    """Faults still to inject, counted down per request (`POST /fake/faults` sets them)."""

    fail_next: int = 0
    status: int = 500
    retry_after: str | None = None
    hang_next: int = 0
    break_next: int = 0
    break_after_chunks: int = 0


class FakeUpstream:
    """The app plus what tests want to inspect (the last request body, the request count)."""

    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.last_request: dict[str, Any] | None = None
        self.requests = 0
        self.cancelled = 0
        self.completed = 0
        self.failed = 0
        self.broken = 0
        # What an engine would hold at once: requests, and their prompt + max_tokens (what a KV cache
        # reserves), now and at the highest seen; the multi-process admission test reads the peaks.
        self.in_flight = 0
        self.in_flight_tokens = 0
        self.max_in_flight = 0
        self.max_in_flight_tokens = 0
        self._rng = random.Random(self.config.seed)
        self.faults = Faults(
            fail_next=self.config.fail_first, status=self.config.failure_status, retry_after=self.config.retry_after
        )
        self.replay: ReplayTier | None = None
        if self.config.replay is not None:
            # Imported here: the plain fake must not pay for the planner and the outcome tables.
            from gateway.replay_tier import ReplayTier

            self.replay = ReplayTier(self.config.replay)
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_get("/v1/models", self.list_models)
        self.app.router.add_get("/health", self.health)
        # Inspection routes for tests: what the fake received and how often it was cut off.
        self.app.router.add_get("/fake/last-request", self.inspect_last)
        self.app.router.add_get("/fake/stats", self.inspect_stats)
        self.app.router.add_post("/fake/faults", self.set_faults)
        # vLLM's own load gauges, under vLLM's names, so the gateway's engine-load reader is tested for real.
        self.app.router.add_get("/metrics", self.engine_metrics)

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def inspect_last(self, _: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.last_request), content_type="application/json")

    async def inspect_stats(self, _: web.Request) -> web.Response:
        stats: dict[str, Any] = {
            "requests": self.requests,
            "cancelled": self.cancelled,
            "completed": self.completed,
            "failed": self.failed,
            "broken": self.broken,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "max_in_flight_tokens": self.max_in_flight_tokens,
        }
        if self.replay is not None:
            stats.update(self.replay.stats())
        return web.Response(body=orjson.dumps(stats), content_type="application/json")

    async def set_faults(self, request: web.Request) -> web.Response:
        """Replace the pending faults: {"fail_next", "status", "retry_after", "hang_next", "break_next",
        "break_after_chunks"}; fields left out are zero (or 500 for status)."""
        try:
            self.faults = Faults(**orjson.loads(await request.read()))
        except (orjson.JSONDecodeError, TypeError) as err:
            return self._error(400, f"bad faults: {err}")
        return web.Response(body=orjson.dumps(vars(self.faults)), content_type="application/json")

    async def engine_metrics(self, _: web.Request) -> web.Response:
        if self.replay is not None:
            running, waiting = self.replay.gate.active, self.replay.gate.waiting
        else:
            running, waiting = max(self.requests - self.completed - self.cancelled, 0), 0
        text = (
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running {float(running)}\n"
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting {float(waiting)}\n"
        )
        return web.Response(text=text, content_type="text/plain")

    async def list_models(self, _: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "owned_by": "fake"} for m in self.config.models]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")

    def _error(
        self, status: int, message: str, param: str | None = None, retry_after: str | None = None
    ) -> web.Response:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
        headers = {"retry-after": retry_after} if retry_after is not None else None
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)

    def _injected_failure(self) -> web.Response | None:
        faults = self.faults
        if faults.fail_next > 0:
            faults.fail_next -= 1
            self.failed += 1
            return self._error(faults.status, "injected failure", retry_after=faults.retry_after)
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        # Numbered on arrival: read after the simulated delay, concurrent requests shared one id.
        number = self.requests
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self._error(400, "invalid JSON")
        self.last_request = body
        cfg = self.config
        model = body.get("model")
        if cfg.models and model not in cfg.models:
            return self._error(404, f"The model `{model}` does not exist.", "model")
        injected = self._injected_failure()
        if injected is not None:
            return injected
        if self.faults.hang_next > 0:
            self.faults.hang_next -= 1
            await asyncio.sleep(3600)
        if cfg.failure_rate and self._rng.random() < cfg.failure_rate:
            self.failed += 1
            return self._error(cfg.failure_status, "simulated failure", retry_after=cfg.retry_after)
        if self.replay is not None:
            try:
                return await self.replay.chat(request, body, number)
            except asyncio.CancelledError:
                # The caller (the gateway) hung up: what the disconnect tests count.
                self.cancelled += 1
                raise
        cap = body.get("max_completion_tokens") or body.get("max_tokens") or cfg.reply_tokens
        n_tokens = max(min(cfg.reply_tokens, int(cap)), 1)
        prompt_tokens = sum(len(str(m.get("content") or "")) for m in body.get("messages", [])) // 4 + 1
        if cfg.max_context_tokens and prompt_tokens + int(cap) > cfg.max_context_tokens:
            asked = prompt_tokens + int(cap)
            message = (
                f"This model's maximum context length is {cfg.max_context_tokens} tokens. However, you"
                f" requested {asked} tokens ({prompt_tokens} in the messages, {int(cap)} in the completion)."
            )
            return self._error(400, message, "max_tokens")
        held = prompt_tokens + int(cap)
        self.in_flight += 1
        self.in_flight_tokens += held
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_in_flight_tokens = max(self.max_in_flight_tokens, self.in_flight_tokens)
        try:
            return await self._answer(request, body, number, n_tokens, prompt_tokens)
        finally:
            self.in_flight -= 1
            self.in_flight_tokens -= held

    async def _answer(
        self, request: web.Request, body: dict[str, Any], number: int, n_tokens: int, prompt_tokens: int
    ) -> web.StreamResponse:
        cfg = self.config
        model = body.get("model")
        want_logprobs = bool(body.get("logprobs"))
        top_n = int(body.get("top_logprobs") or 0)
        try:
            if cfg.ttft_ms:
                await asyncio.sleep(cfg.ttft_ms / 1000.0)
            if body.get("stream"):
                return await self._stream(request, body, number, n_tokens, prompt_tokens, want_logprobs, top_n)
            if cfg.token_delay_ms:
                await asyncio.sleep(cfg.token_delay_ms * n_tokens / 1000.0)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.completed += 1
        tokens = [_WORDS[i % len(_WORDS)] for i in range(n_tokens)]
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": "".join(tokens)},
                "logprobs": _logprobs(tokens, top_n) if want_logprobs else None,
                "finish_reason": "length" if n_tokens < cfg.reply_tokens else "stop",
            }
            for i in range(int(body.get("n") or 1))
        ]
        reply = {
            "id": f"chatcmpl-fake{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": n_tokens * len(choices),
                "total_tokens": prompt_tokens + n_tokens * len(choices),
            },
        }
        return web.Response(body=orjson.dumps(reply), content_type="application/json")

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        number: int,
        n_tokens: int,
        prompt_tokens: int,
        want_logprobs: bool,
        top_n: int,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        base = {
            "id": f"chatcmpl-fake{number}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model"),
        }
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        break_after = self.config.break_after_chunks
        if self.faults.break_next > 0:
            self.faults.break_next -= 1
            break_after = self.faults.break_after_chunks
        sent = 0

        async def send(obj: dict[str, Any]) -> None:
            nonlocal sent
            if break_after is not None and sent >= break_after:
                # A tier that dies mid-answer: the connection drops with the chunked body unfinished.
                self.broken += 1
                if request.transport is not None:
                    request.transport.abort()
                raise _StreamCut
            await resp.write(b"data: " + orjson.dumps(obj) + b"\n\n")
            sent += 1

        try:
            await self._send_stream(send, base, n_tokens, want_logprobs, top_n, include_usage, prompt_tokens)
        except _StreamCut:
            return resp
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        self.completed += 1
        return resp

    async def _send_stream(
        self,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        base: dict[str, Any],
        n_tokens: int,
        want_logprobs: bool,
        top_n: int,
        include_usage: bool,
        prompt_tokens: int,
    ) -> None:
        await send(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
            }
        )
        for i in range(n_tokens):
            if self.config.token_delay_ms:
                try:
                    await asyncio.sleep(self.config.token_delay_ms / 1000.0)
                except asyncio.CancelledError:
                    self.cancelled += 1
                    raise
            tok = _WORDS[i % len(_WORDS)]
            await send(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": tok},
                            "logprobs": _logprobs([tok], top_n) if want_logprobs else None,
                            "finish_reason": None,
                        }
                    ],
                }
            )
        finish = "length" if n_tokens < self.config.reply_tokens else "stop"
        await send({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]})
        if include_usage:
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": n_tokens,
                "total_tokens": prompt_tokens + n_tokens,
            }
            await send({**base, "choices": [], "usage": usage})


class _StreamCut(Exception):
    """Raised inside a stream the fault injection cut off."""


def _logprobs(tokens: list[str], top_n: int) -> dict[str, Any]:
    content = []
    for i, tok in enumerate(tokens):
        lp = -0.05 * (1 + i % 5)
        entry: dict[str, Any] = {"token": tok, "logprob": lp, "bytes": list(tok.encode())}
        entry["top_logprobs"] = [
            {"token": tok if k == 0 else f"{tok}{k}", "logprob": lp - 1.5 * k, "bytes": None} for k in range(top_n)
        ]
        content.append(entry)
    return {"content": content}


async def start_fake(
    config: FakeConfig, host: str = "127.0.0.1", port: int = 0
) -> tuple[FakeUpstream, web.AppRunner, int]:
    """Start a fake on an event loop that is already running; returns the bound port."""
    fake = FakeUpstream(config)
    # handler_cancellation: a caller that hangs up cancels the handler, as it cancels a vLLM request.
    runner = web.AppRunner(fake.app, access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    addresses = runner.addresses
    bound = addresses[0][1] if addresses else port
    return fake, runner, int(bound)


def run_fake(config: FakeConfig, host: str, port: int) -> None:
    """Blocking entry point for `tiergate fake-upstream`; Ctrl-C stops it."""
    import uvloop

    async def serve_forever() -> None:
        _, runner, bound = await start_fake(config, host, port)
        print(f"fake upstream listening on http://{host}:{bound}/v1", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve_forever())
