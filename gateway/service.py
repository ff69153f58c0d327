"""The chat-completions service: read -> validate -> decide -> call the tier -> relay the answer.

Route handlers stay a line long; everything a request goes through is here, in the order it happens.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeGuard

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from deployments.profile import LATENCY_CLASSES, LatencyClass, Profile
from gateway.admission import TierAdmission, estimate_prompt_tokens
from gateway.disconnect import ClientClosed, unless_disconnected
from gateway.errors import (
    HTTPError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    UpstreamFailed,
    error_body,
)
from gateway.metrics import GatewayMetrics
from gateway.middleware import RequestContext, context_of
from gateway.protocol import ParsedRequest, parse_chat_request
from gateway.streaming import SSEResponse
from gateway.tiers import Tier, TierRegistry
from gateway.upstream import UpstreamClient, UpstreamStream
from router.runtime.policy import PolicyConfig, RoutingRequest, Scorer, decide

LATENCY_HEADER = "x-tiergate-latency-class"


def policy_config(profile: Profile) -> PolicyConfig:
    names = tuple(t.name for t in profile.tiers)
    caps: dict[str, int | None] = {
        cls: (names.index(spec.max_tier) if spec.max_tier is not None else None)
        for cls, spec in profile.routing.latency_classes.items()
    }
    return PolicyConfig(
        tier_names=names, thresholds=tuple(profile.routing.thresholds_for(len(names))), class_max_tier=caps
    )


class ChatService:
    def __init__(
        self,
        profile: Profile,
        *,
        tiers: TierRegistry,
        client: UpstreamClient,
        scorer: Scorer,
        metrics: GatewayMetrics,
        admission: dict[str, TierAdmission],
    ) -> None:
        self.profile = profile
        self.tiers = tiers
        self.client = client
        self.scorer = scorer
        self.metrics = metrics
        self.policy = policy_config(profile)
        self.timeout_s = profile.gateway.request_timeout_s
        self.max_body_bytes = profile.gateway.max_body_bytes
        self.default_class = profile.routing.default_latency_class
        self.admission = admission

    async def chat_completions(self, request: Request) -> Response:
        ctx = context_of(request.scope)
        try:
            raw = await self._read_body(request)
            parsed = parse_chat_request(raw)
            ctx.stream = parsed.stream
            tier, ladder = self._choose_tier(request, parsed, ctx)
            if parsed.unknown_fields:
                ctx.extra_headers.append((b"x-tiergate-passed-through", ",".join(parsed.unknown_fields).encode()))
            tokens = estimate_prompt_tokens(parsed.routing_text()) + (parsed.max_tokens or tier.default_max_tokens)
            tier, gate, cost = await self._admit(request, ctx, tier, ladder, tokens)
            body = self._upstream_body(parsed, tier)
            if not parsed.stream:
                try:
                    return await self._complete(request, ctx, tier, body)
                finally:
                    gate.release(cost)
            try:
                return await self._stream(request, ctx, tier, parsed, body, lambda: gate.release(cost))
            except BaseException:
                gate.release(cost)
                raise
        except HTTPError as err:
            ctx.error_code = err.code or err.error_type
            if err.counts_as_tier_failure and ctx.tier:
                self.metrics.upstream_errors.labels(ctx.tier, err.error_type).inc()
            raise
        except ClientClosed:
            ctx.client_closed = True
            return Response(status_code=499)

    async def _read_body(self, request: Request) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise PayloadTooLarge(f"Request body exceeds the limit of {self.max_body_bytes} bytes.")
                chunks.append(chunk)
        except ClientDisconnect:
            raise ClientClosed from None
        return b"".join(chunks)

    def _choose_tier(
        self, request: Request, parsed: ParsedRequest, ctx: RequestContext
    ) -> tuple[Tier, tuple[str, ...]]:
        """The tier to try first and, for model=auto, the larger tiers an overflow may use."""
        name = parsed.checked.model
        latency_class = request.headers.get(LATENCY_HEADER, self.default_class)
        if not _is_latency_class(latency_class):
            raise InvalidRequest(f"{LATENCY_HEADER} must be one of {', '.join(LATENCY_CLASSES)}.", param=LATENCY_HEADER)
        ctx.latency_class = latency_class
        if name == "auto":
            decision = decide(
                RoutingRequest(
                    text=parsed.routing_text(),
                    turns=len(parsed.checked.messages),
                    latency_class=latency_class,
                    max_tokens=parsed.max_tokens,
                ),
                self.policy,
                self.scorer,
                unavailable=self.tiers.unavailable(),
            )
            self.metrics.routed(decision.tier, decision.reason)
            ctx.route_reason = decision.reason
            name = decision.tier
            ladder = decision.ladder
        else:
            ladder = (name,)
        tier = self.tiers.by_name.get(name)
        if tier is None:
            raise NotFound(
                f"The model '{name}' does not exist. Use 'auto' or one of: {', '.join(self.tiers.names)}.",
                param="model",
                code="model_not_found",
            )
        ctx.tier = tier.name
        return tier, ladder

    async def _admit(
        self, request: Request, ctx: RequestContext, tier: Tier, ladder: tuple[str, ...], tokens: int
    ) -> tuple[Tier, TierAdmission, int]:
        """Hold KV budget on the chosen tier; a full tier overflows up the ladder, else waits or is refused."""
        realtime = ctx.latency_class == "realtime"
        gate = self.admission[tier.name]
        cost = gate.try_admit(tokens, realtime=realtime)
        if cost is not None:
            return tier, gate, cost
        for name in ladder[1:]:
            other = self.admission[name]
            cost = other.try_admit(tokens, realtime=realtime)
            if cost is not None:
                self.metrics.admission_rejections.labels(tier.name, "overflowed").inc()
                ctx.tier, ctx.route_reason = name, f"overflow-from-{tier.name}"
                return self.tiers.by_name[name], other, cost
        try:
            cost = await unless_disconnected(request.receive, gate.admit(tokens, realtime=realtime))
        except HTTPError:
            self.metrics.admission_rejections.labels(tier.name, "refused").inc()
            raise
        return tier, gate, cost

    @staticmethod
    def _upstream_body(parsed: ParsedRequest, tier: Tier) -> bytes:
        if parsed.max_tokens is None:
            # A request without a cap would let one caller hold a tier for its whole context.
            parsed.body["max_tokens"] = tier.default_max_tokens
        return parsed.upstream_body(tier.upstream_model, force_usage=True)

    async def _complete(self, request: Request, ctx: RequestContext, tier: Tier, body: bytes) -> Response:
        t = time.perf_counter()
        reply = await unless_disconnected(
            request.receive, self.client.complete(tier.chat_url, body, timeout_s=self.timeout_s)
        )
        now = time.perf_counter()
        ctx.upstream_s += now - t
        ctx.ttft_s = now - ctx.t0
        try:
            data = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise UpstreamFailed("The tier's answer is not a JSON object.")
        data["model"] = tier.name
        _count_usage(ctx, data.get("usage"))
        return Response(orjson.dumps(data), media_type="application/json")

    async def _stream(
        self,
        request: Request,
        ctx: RequestContext,
        tier: Tier,
        parsed: ParsedRequest,
        body: bytes,
        release: Callable[[], None],
    ) -> Response:
        t = time.perf_counter()
        stream = await unless_disconnected(
            request.receive, self.client.open_stream(tier.chat_url, body, timeout_s=self.timeout_s)
        )
        ctx.upstream_s += time.perf_counter() - t
        opts = parsed.checked.stream_options
        wants_usage = bool(opts and opts.include_usage)
        done = False

        def finish() -> None:
            # Called by the relay when it ends and by the response when it is torn down; a relay
            # that never started (the caller left before the headers) must still give back its
            # connection and its KV budget.
            nonlocal done
            if not done:
                done = True
                stream.close()
                release()

        return SSEResponse(_relay(ctx, stream, tier.name, wants_usage, finish), ctx, on_close=finish)


def _is_latency_class(value: str) -> TypeGuard[LatencyClass]:
    return value in LATENCY_CLASSES


def _count_usage(ctx: RequestContext, usage: Any) -> None:
    if isinstance(usage, dict):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        ctx.prompt_tokens = prompt if isinstance(prompt, int) else 0
        ctx.completion_tokens = completion if isinstance(completion, int) else 0


async def _relay(
    ctx: RequestContext, stream: UpstreamStream, tier_name: str, wants_usage: bool, finish: Callable[[], None]
) -> AsyncIterator[bytes]:
    """Relay the tier's SSE events, renaming the model and keeping usage for metrics."""
    batches = stream.batches().__aiter__()
    try:
        while True:
            t = time.perf_counter()
            try:
                payloads = await batches.__anext__()
            except StopAsyncIteration:
                break
            finally:
                ctx.upstream_s += time.perf_counter() - t
            out = [_relay_event(ctx, payload, tier_name, wants_usage) for payload in payloads]
            data = b"".join(out)
            if data:
                yield data
    except HTTPError as err:
        # Headers are gone; the OpenAI SDK raises on an event carrying an "error" object.
        ctx.error_code = err.code or err.error_type
        yield b"data: " + error_body(err) + b"\n\n"
    finally:
        finish()


def _relay_event(ctx: RequestContext, payload: bytes, tier_name: str, wants_usage: bool) -> bytes:
    if payload == b"[DONE]":
        return b"data: [DONE]\n\n"
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return b"data: " + payload + b"\n\n"
    if not isinstance(obj, dict):
        return b"data: " + payload + b"\n\n"
    if ctx.ttft_s is None and obj.get("choices"):
        ctx.ttft_s = time.perf_counter() - ctx.t0
    if "model" in obj:
        obj["model"] = tier_name
    usage = obj.get("usage")
    if usage:
        _count_usage(ctx, usage)
    if not wants_usage:
        # tiergate asked the tier for usage to meter tokens; the caller did not, so it gets the
        # stream it asked for: no usage-only chunk, no usage field.
        if not obj.get("choices") and usage:
            return b""
        obj.pop("usage", None)
    return b"data: " + orjson.dumps(obj) + b"\n\n"
