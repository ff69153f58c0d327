"""Serving one request through the live cascade: attempts under their own leases, the answer sent.

gateway.cascade runs the climb (ask, judge, maybe climb) over a `call` it is given; this module
gives it that call (an unstreamed attempt with logprobs, leased, retried, paid for), relays the
top tier's live stream when a streamed request climbs that far, and writes the headers and
metrics of the attempts.
"""

from __future__ import annotations

import time
from dataclasses import replace

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.accounting import Accounting, slo_so_far
from gateway.admission import Lease
from gateway.attempts import TierCaller, json_object
from gateway.budgets import request_budget
from gateway.cascade import (
    CascadeOutcome,
    TierAnswer,
    answer_logprobs,
    answer_text,
    run_cascade,
    sse_from_completion,
    strip_logprobs,
)
from gateway.context import RequestContext, usage_tokens
from gateway.errors import HTTPError, TierUnavailable
from gateway.limits import apply_plan
from gateway.metrics import GatewayMetrics
from gateway.protocol import ParsedRequest
from gateway.routing import Route, RouteChooser
from router.runtime.slo import Estimate


class LiveCascade:
    """The cascade's side of the chat service; the route's judge and cascade settings come from `chooser`."""

    def __init__(
        self, *, chooser: RouteChooser, caller: TierCaller, accounting: Accounting, metrics: GatewayMetrics
    ) -> None:
        self.chooser = chooser
        self.caller = caller
        self.accounting = accounting
        self.metrics = metrics

    async def serve(
        self, request: Request, ctx: RequestContext, parsed: ParsedRequest, route: Route
    ) -> tuple[Response, Lease | None, Route]:
        """Ask the cheapest accepted tier, judge, climb while the verifier doubts and the budget allows.

        Returns the response, the lease of the last tier's live stream when it streams one (the
        caller releases it once the response is sent), and the route whose budget the answer is
        held to (a live stream's first token no longer waits for its last).
        """
        judge = self.chooser.judge
        assert judge is not None
        routing = self.chooser.profile.routing

        def estimate(name: str) -> Estimate:
            est = self.chooser.estimate(name, route.prompt_tokens, self.chooser.answer_tokens(name, parsed))
            return est if est is not None else Estimate(0.0, 0.0)

        outcome = await run_cascade(
            parsed.routing_text(),
            route.ladder,
            lambda name: self._attempt(request, ctx, parsed, name),
            judge,
            max_escalations=routing.cascade.max_escalations,
            budget=route.budget,
            estimate=estimate,
            started=ctx.t0,
            stream_last=parsed.stream,
        )
        if outcome.stream_tier is None:
            return self._response(ctx, parsed, route, outcome), None, route
        live = replace(
            route,
            budget=request_budget(request.headers, route.latency_class, routing, sent_whole=False),
            spent_before_usd=outcome.cost_usd,
        )
        try:
            response, lease = await self._stream_top(request, ctx, parsed, live, outcome)
        except HTTPError as err:
            best = outcome.best_so_far
            if best is None or not (err.counts_as_tier_failure or isinstance(err, TierUnavailable)):
                self._count_attempts(outcome, ctx.key_id)
                raise
            # The top tier failed before its first byte: the best answer judged so far, sent whole.
            self.metrics.fallbacks.labels(outcome.stream_tier, best.tier).inc()
            kept = replace(outcome, answer=best, stop_reason="tier-failed", stream_tier=None)
            return self._response(ctx, parsed, route, kept), None, route
        except BaseException:
            self._count_attempts(outcome, ctx.key_id)
            raise
        self._count_attempts(outcome, ctx.key_id)
        return response, lease, live

    async def _attempt(self, request: Request, ctx: RequestContext, parsed: ParsedRequest, name: str) -> TierAnswer:
        """One unstreamed call to tier `name` with token logprobs, under its own lease."""
        tier = self.caller.tiers.by_name[name]
        lease = await self.caller.lease_for_attempt(request, ctx, parsed, tier)
        try:
            body = dict(parsed.body)
            body["model"] = tier.upstream_model
            body["stream"] = False
            body.pop("stream_options", None)
            body["logprobs"] = True
            apply_plan(body, self.caller.answer_budget(ctx, parsed, tier))
            load = self.chooser.load(name)
            t = time.perf_counter()
            reply = await self.caller.call(request, ctx, tier, orjson.dumps(body))
            elapsed = ctx.waited_since(t) - t
        finally:
            lease.release()
        data = json_object(reply.body)
        prompt, completion = usage_tokens(data.get("usage")) or (0, 0)
        self.accounting.observe_attempt(name, prompt, completion, elapsed * 1e3, load)
        return TierAnswer(
            name,
            data,
            answer_text(data),
            answer_logprobs(data),
            prompt,
            completion,
            self.accounting.cost(name, prompt, completion),
            elapsed * 1e3,
        )

    async def _stream_top(
        self, request: Request, ctx: RequestContext, parsed: ParsedRequest, route: Route, outcome: CascadeOutcome
    ) -> tuple[Response, Lease]:
        """The cascade climbed to the last tier of a streamed request: relay that tier's stream live.

        The earlier attempts are counted by the caller, which knows whether one of them is returned instead.
        """
        assert outcome.stream_tier is not None
        tier = self.caller.tiers.by_name[outcome.stream_tier]
        ctx.moved_to(tier.name, ctx.route_reason or "cascade")
        lease = await self.caller.lease_for_attempt(request, ctx, parsed, tier)
        try:
            body = self.caller.upstream_body(ctx, parsed, tier)
            response = await self.caller.stream(request, ctx, tier, parsed, body, lease)
        except BaseException:
            lease.release()
            raise
        tried = (*outcome.tiers_tried, tier.name)
        # The streamed answer's cost is known only at its end (metrics count it); the header would lie.
        ctx.attempted(tried, len(outcome.escalations), None, slo_so_far(ctx, route.budget))
        return response, lease

    def _count_attempts(self, outcome: CascadeOutcome, key: str) -> None:
        for a in outcome.answers:
            if a is not outcome.answer:
                self.metrics.attempt(a.tier, a.prompt_tokens, a.completion_tokens, a.cost_usd, key)
        for src, dst, why in outcome.escalations:
            self.metrics.escalations.labels(src, dst, why).inc()
        for src, dst in outcome.fallbacks:
            self.metrics.fallbacks.labels(src, dst).inc()

    def _response(self, ctx: RequestContext, parsed: ParsedRequest, route: Route, outcome: CascadeOutcome) -> Response:
        """The accepted answer sent whole (or as one SSE stream), with its headers and metrics."""
        answer = outcome.answer
        assert answer is not None
        self._count_attempts(outcome, ctx.key_id)
        if outcome.stop_reason in ("budget-spent", "max-escalations", "tier-failed"):
            ctx.extra_headers.append((b"x-tiergate-cascade-stopped", outcome.stop_reason.encode()))
        ctx.moved_to(answer.tier, ctx.route_reason or "cascade")
        data = answer.data
        data["model"] = answer.tier
        if not parsed.body.get("logprobs"):
            strip_logprobs(data)
        ctx.count_usage(data.get("usage"))
        ctx.first_token(time.perf_counter())
        slo = slo_so_far(ctx, route.budget)
        ctx.attempted(tuple(outcome.tiers_tried), len(outcome.escalations), outcome.cost_usd, slo)
        self.metrics.slo_result(route.latency_class, slo)
        self.accounting.account(ctx, answer.tier, answer.cost_usd, outcome.cost_usd - answer.cost_usd)
        if parsed.stream:
            opts = parsed.checked.stream_options
            return Response(
                sse_from_completion(data, wants_usage=bool(opts and opts.include_usage)),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )
        return Response(orjson.dumps(data), media_type="application/json")
