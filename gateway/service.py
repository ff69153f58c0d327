"""The chat-completions service: read -> validate -> decide -> call the tier -> relay the answer.

Route handlers stay a line long; everything a request goes through is here, in the order it happens.
"""

from __future__ import annotations

import time
from typing import TypeGuard

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from deployments.profile import LATENCY_CLASSES, LatencyClass, Profile
from gateway.admission import Lease, TierAdmission, estimate_prompt_tokens
from gateway.context import RequestContext, context_of
from gateway.disconnect import ClientClosed, unless_disconnected
from gateway.errors import (
    HTTPError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    UpstreamFailed,
)
from gateway.metrics import GatewayMetrics
from gateway.protocol import ParsedRequest, parse_chat_request
from gateway.streaming import SSEResponse, relay
from gateway.tiers import Tier, TierRegistry
from gateway.upstream import UpstreamClient
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

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one chat request end to end, response included.

        The request's lease on its tier is released here, in one place, however the request ends:
        answered, failed, abandoned by its caller, or torn down before the first byte went out.
        Errors propagate to the caller of `serve`, which renders them (the lease is back by then).
        """
        request = Request(scope, receive, send)
        ctx = context_of(scope)
        try:
            parsed, tier, ladder = await self._route(request, ctx)
            tokens = estimate_prompt_tokens(parsed.routing_text()) + (parsed.max_tokens or tier.default_max_tokens)
            tier, lease = await self._admit(request, ctx, tier, ladder, tokens)
            try:
                body = self._upstream_body(parsed, tier)
                if parsed.stream:
                    response = await self._stream(request, ctx, tier, parsed, body, lease)
                else:
                    response = await self._complete(request, ctx, tier, body)
                await response(scope, receive, send)
            finally:
                lease.release()
        except HTTPError as err:
            ctx.failed(err)
            if err.counts_as_tier_failure and ctx.tier:
                self.metrics.upstream_errors.labels(ctx.tier, err.error_type).inc()
            raise
        except ClientClosed:
            ctx.client_left()
            await Response(status_code=499)(scope, receive, send)

    async def _route(self, request: Request, ctx: RequestContext) -> tuple[ParsedRequest, Tier, tuple[str, ...]]:
        raw = await self._read_body(request)
        parsed = parse_chat_request(raw)
        return (parsed, *self._choose_tier(request, parsed, ctx))

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
        reason = None
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
            reason = decision.reason
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
        ctx.routed(
            tier.name,
            latency_class=latency_class,
            reason=reason,
            stream=parsed.stream,
            passed_through=parsed.unknown_fields,
        )
        return tier, ladder

    async def _admit(
        self, request: Request, ctx: RequestContext, tier: Tier, ladder: tuple[str, ...], tokens: int
    ) -> tuple[Tier, Lease]:
        """Lease KV budget on the chosen tier; a full tier overflows up the ladder, else waits or is refused."""
        realtime = ctx.latency_class == "realtime"
        gate = self.admission[tier.name]
        lease = gate.try_lease(tokens, realtime=realtime)
        if lease is not None:
            return tier, lease
        for name in ladder[1:]:
            lease = self.admission[name].try_lease(tokens, realtime=realtime)
            if lease is not None:
                self.metrics.admission_rejections.labels(tier.name, "overflowed").inc()
                ctx.moved_to(name, f"overflow-from-{tier.name}")
                return self.tiers.by_name[name], lease
        try:
            lease = await unless_disconnected(request.receive, gate.lease(tokens, realtime=realtime))
        except HTTPError:
            self.metrics.admission_rejections.labels(tier.name, "refused").inc()
            raise
        return tier, lease

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
        ctx.count_usage(data.get("usage"))
        return Response(orjson.dumps(data), media_type="application/json")

    async def _stream(
        self, request: Request, ctx: RequestContext, tier: Tier, parsed: ParsedRequest, body: bytes, lease: Lease
    ) -> Response:
        t = time.perf_counter()
        work = self.client.open_stream(tier.chat_url, body, timeout_s=self.timeout_s)
        stream = await unless_disconnected(request.receive, work)
        # From here the lease owns the connection, so every way out of the request closes it.
        lease.hold(stream.close)
        ctx.waited_since(t)
        opts = parsed.checked.stream_options
        wants_usage = bool(opts and opts.include_usage)
        return SSEResponse(relay(ctx, stream, tier.name, wants_usage), ctx)


def _is_latency_class(value: str) -> TypeGuard[LatencyClass]:
    return value in LATENCY_CLASSES
