"""Calling a tier for one request: the KV lease, the body the tier gets, retries and fallback, the relay.

Everything here runs once a route is chosen (gateway.routing) and stops at the response object;
the service sends it and counts the outcome (gateway.accounting). Every call is bounded by the
request's deadline and cancelled when the caller hangs up (gateway.disconnect).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.admission import Lease, TierAdmission
from gateway.context import RequestContext
from gateway.disconnect import unless_disconnected
from gateway.errors import HTTPError, TierUnavailable, UpstreamFailed
from gateway.limits import CAPPED_HEADER, TierLimits, apply_plan
from gateway.metrics import GatewayMetrics
from gateway.protocol import ParsedRequest
from gateway.resilience import Resilience
from gateway.routing import Route
from gateway.streaming import SSEResponse, relay
from gateway.tiers import Tier, TierRegistry
from gateway.upstream import UpstreamClient, UpstreamReply, UpstreamStream
from router.runtime.context_fit import OutputPlan


class TierCaller:
    """Leases, calls and relays for one gateway process; holds no per-request state."""

    def __init__(
        self,
        *,
        tiers: TierRegistry,
        client: UpstreamClient,
        metrics: GatewayMetrics,
        admission: Mapping[str, TierAdmission],
        limits: TierLimits,
        resilience: Resilience,
        timeout_s: float,
    ) -> None:
        self.tiers = tiers
        self.client = client
        self.metrics = metrics
        self.admission = admission
        self.limits = limits
        self.resilience = resilience
        self.timeout_s = timeout_s

    def deadline(self, ctx: RequestContext) -> float:
        """The request's deadline on the perf_counter clock: every try and wait fits before it."""
        return ctx.t0 + self.timeout_s

    async def admit(
        self, request: Request, ctx: RequestContext, parsed: ParsedRequest, tier: Tier, ladder: tuple[str, ...]
    ) -> tuple[Tier, Lease]:
        """Lease KV budget on the chosen tier; a full tier overflows up the ladder, else waits or is refused.

        A tier's lease is the prompt plus the max_tokens its context leaves (gateway.limits), so an
        absurd max_tokens never reserves more than one context's worth.
        """
        realtime = ctx.latency_class == "realtime"
        gate = self.admission[tier.name]
        tokens = self.limits.plan(tier.name, parsed).kv_tokens
        lease = gate.try_lease(tokens, realtime=realtime)
        if lease is not None:
            return tier, lease
        for name in ladder[1:]:
            lease = self.admission[name].try_lease(self.limits.plan(name, parsed).kv_tokens, realtime=realtime)
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

    async def lease_for_attempt(
        self, request: Request, ctx: RequestContext, parsed: ParsedRequest, tier: Tier
    ) -> Lease:
        """An attempt's lease on `tier`: at once if it fits, else after the tier's queue (no overflow:
        a fallback or the cascade has already decided which tier answers)."""
        tokens = self.limits.plan(tier.name, parsed).kv_tokens
        gate = self.admission[tier.name]
        realtime = ctx.latency_class == "realtime"
        lease = gate.try_lease(tokens, realtime=realtime)
        if lease is None:
            lease = await unless_disconnected(request.receive, gate.lease(tokens, realtime=realtime))
        return lease

    def answer_budget(self, ctx: RequestContext, parsed: ParsedRequest, tier: Tier) -> OutputPlan:
        """`tier`'s answer budget for this request: a 400 when the prompt does not fit it, a header when
        the caller's max_tokens was lowered (the last tier asked wins)."""
        plan = self.limits.plan(tier.name, parsed)
        if not plan.fits:
            raise self.limits.too_long(parsed, (tier.name,))
        ctx.extra_headers = [h for h in ctx.extra_headers if h[0] != CAPPED_HEADER]
        if plan.capped:
            ctx.extra_headers.append((CAPPED_HEADER, str(plan.max_tokens).encode()))
        return plan

    def upstream_body(self, ctx: RequestContext, parsed: ParsedRequest, tier: Tier) -> bytes:
        """The caller's body as `tier` gets it: its upstream model name, usage asked for, max_tokens capped."""
        # Always a cap: without one a caller could hold a tier for its whole context; with the caller's
        # own, never more than the tier's context leaves after the prompt.
        apply_plan(parsed.body, self.answer_budget(ctx, parsed, tier))
        return parsed.upstream_body(tier.upstream_model, force_usage=True)

    async def answer(
        self, request: Request, ctx: RequestContext, parsed: ParsedRequest, route: Route, tier: Tier, lease: Lease
    ) -> tuple[Response, Tier, Lease]:
        """Call `tier` (with retries); when it still fails, the next healthy tier, before the first byte.

        Only model=auto falls back (a pinned tier is what the caller asked for). Returns the response,
        the tier that answered and the lease now held; a lease given up on the way is released here.
        """
        pinned = parsed.checked.model != "auto"
        try:
            while True:
                try:
                    body = self.upstream_body(ctx, parsed, tier)
                    if parsed.stream:
                        response = await self.stream(request, ctx, tier, parsed, body, lease)
                    else:
                        response = await self._complete(request, ctx, tier, body)
                    return response, tier, lease
                except HTTPError as err:
                    if not (err.counts_as_tier_failure or isinstance(err, TierUnavailable)):
                        raise
                    fall_back = not pinned and self.resilience.fallback
                    nxt = self._fallback_tier(route, tier, ctx, parsed) if fall_back else None
                    if nxt is None:
                        raise
                lease.release()
                self.metrics.fallbacks.labels(tier.name, nxt.name).inc()
                ctx.fallen_from = (*ctx.fallen_from, tier.name)
                ctx.moved_to(nxt.name, f"fallback-from-{tier.name}")
                tier = nxt
                lease = await self.lease_for_attempt(request, ctx, parsed, tier)
        except BaseException:
            lease.release()
            raise

    def _fallback_tier(self, route: Route, failed: Tier, ctx: RequestContext, parsed: ParsedRequest) -> Tier | None:
        """The next tier to try: up the route's ladder first (never a worse answer), then down from
        where routing started, nearest first, as the policy does for a tier known to be down; only
        tiers whose context holds the prompt (gateway.limits)."""
        names = self.tiers.names
        start = names.index(route.tier.name)
        skip = {*ctx.fallen_from, failed.name} | self.tiers.unavailable()
        for name in (*route.ladder, *reversed(names[:start])):
            if name not in skip and self.limits.plan(name, parsed).fits:
                return self.tiers.by_name[name]
        return None

    async def call(self, request: Request, ctx: RequestContext, tier: Tier, body: bytes) -> UpstreamReply:
        """One unstreamed call to `tier`, retried within the request's deadline, cancelled if the caller leaves."""
        work = self.resilience.call(
            tier.name,
            lambda try_s: self.client.complete(tier.chat_url, body, timeout_s=try_s),
            self.deadline(ctx),
        )
        return await unless_disconnected(request.receive, work)

    async def _complete(self, request: Request, ctx: RequestContext, tier: Tier, body: bytes) -> Response:
        t = time.perf_counter()
        reply = await self.call(request, ctx, tier, body)
        now = time.perf_counter()
        ctx.upstream_s += now - t
        ctx.ttft_s = now - ctx.t0
        data = json_object(reply.body)
        data["model"] = tier.name
        ctx.count_usage(data.get("usage"))
        return Response(orjson.dumps(data), media_type="application/json")

    async def stream(
        self, request: Request, ctx: RequestContext, tier: Tier, parsed: ParsedRequest, body: bytes, lease: Lease
    ) -> Response:
        """Open `tier`'s stream (retried until its first event) and relay it; the lease closes its connection."""
        t = time.perf_counter()
        deadline = self.deadline(ctx)

        def open_stream(try_s: float) -> Awaitable[UpstreamStream]:
            # The whole stream is bounded by what is left of the request; the part a retry can still
            # replace (headers and first event) by the per-try bound.
            left = max(deadline - time.perf_counter(), 1e-3)
            return self.client.open_stream(tier.chat_url, body, timeout_s=left, first_event_s=try_s)

        work = self.resilience.call(tier.name, open_stream, deadline)
        stream = await unless_disconnected(request.receive, work)
        # From here the lease owns the connection, so every way out of the request closes it.
        lease.hold(stream.close)
        ctx.waited_since(t)
        opts = parsed.checked.stream_options
        wants_usage = bool(opts and opts.include_usage)
        name = tier.name
        return SSEResponse(relay(ctx, stream, name, wants_usage, on_fault=lambda: self.tiers.failed(name)), ctx)


def json_object(raw: bytes) -> dict[str, Any]:
    """A tier's answer body as a JSON object; anything else is the tier's failure (a 502)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise UpstreamFailed("The tier's answer is not a JSON object.")
    return data
