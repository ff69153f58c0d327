"""The chat-completions service: read -> validate -> decide -> call the tier -> relay the answer.

Route handlers stay a line long; everything a request goes through is here, in the order it happens.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from deployments.economics import TierEconomics
from deployments.profile import LATENCY_CLASSES, LatencyClass, Profile
from gateway.admission import Lease, TierAdmission, estimate_prompt_tokens
from gateway.affinity import HEADER as AFFINITY_HEADER
from gateway.affinity import AffinityStore, conversation_key
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
from gateway.context import RequestContext, context_of, usage_tokens
from gateway.disconnect import ClientClosed, unless_disconnected
from gateway.engine_load import EngineLoadPoller
from gateway.errors import (
    HTTPError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    TierUnavailable,
    UpstreamFailed,
)
from gateway.limits import CAPPED_HEADER, TierLimits, apply_plan
from gateway.metrics import GatewayMetrics
from gateway.protocol import ParsedRequest, parse_chat_request
from gateway.resilience import Resilience
from gateway.streaming import SSEResponse, relay
from gateway.tiers import Tier, TierRegistry
from gateway.upstream import UpstreamClient, UpstreamStream
from router.runtime.cascade import AnswerJudge
from router.runtime.context_fit import OutputPlan, fitting
from router.runtime.policy import Decision, PolicyConfig, RoutingRequest, Scorer, decide
from router.runtime.slo import Budget, Estimate, LatencyEstimator, TierLoad

LATENCY_HEADER = "x-tiergate-latency-class"


def policy_config(profile: Profile, start_thresholds: tuple[float, ...] = ()) -> PolicyConfig:
    """The policy's plain-data view of the profile; `start_thresholds` (a cascade's operating point)
    replace routing.thresholds when given."""
    names = tuple(t.name for t in profile.tiers)
    caps: dict[str, int | None] = {
        cls: (names.index(spec.max_tier) if spec.max_tier is not None else None)
        for cls, spec in profile.routing.latency_classes.items()
    }
    thresholds = start_thresholds or tuple(profile.routing.thresholds_for(len(names)))
    return PolicyConfig(tier_names=names, thresholds=thresholds, class_max_tier=caps)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes first, where it may climb, and the budget it is held to."""

    tier: Tier
    ladder: tuple[str, ...]
    budget: Budget
    latency_class: LatencyClass
    cascade: bool
    prompt_tokens: int
    conversation: str | None = None
    # Every tier's estimate for this request, when an estimator is set (model=auto only).
    estimates: Mapping[str, Estimate] = field(default_factory=dict)
    # USD already spent on cascade attempts before the tier that answers (a live stream's climb).
    spent_before_usd: float = 0.0


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
        economics: dict[str, TierEconomics] | None = None,
        estimator: LatencyEstimator | None = None,
        judge: AnswerJudge | None = None,
        start_thresholds: tuple[float, ...] = (),
        engine_load: EngineLoadPoller | None = None,
        resilience: Resilience | None = None,
        limits: TierLimits | None = None,
    ) -> None:
        self.profile = profile
        self.tiers = tiers
        self.client = client
        self.scorer = scorer
        self.metrics = metrics
        self.policy = policy_config(profile, start_thresholds)
        self.economics = economics or {}
        self.estimator = estimator
        self.judge = judge
        self.engine_load = engine_load
        self.engines = {t.name: t.engine for t in profile.tiers}
        self.affinity = AffinityStore()
        self.timeout_s = profile.gateway.request_timeout_s
        self.max_body_bytes = profile.gateway.max_body_bytes
        self.default_class = profile.routing.default_latency_class
        self.admission = admission
        self.resilience = resilience or Resilience(profile.gateway.resilience, tiers, metrics)
        self.limits = limits if limits is not None else TierLimits.from_specs(profile.tiers)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one chat request end to end, response included.

        The request's lease on its tier is released here, in one place, however the request ends:
        answered, failed, abandoned by its caller, or torn down before the first byte went out.
        Errors propagate to the caller of `serve`, which renders them (the lease is back by then).
        A cascade holds one lease per attempt, each given back when its tier has answered.
        """
        request = Request(scope, receive, send)
        ctx = context_of(scope)
        try:
            parsed = parse_chat_request(await self._read_body(request))
            await self.limits.count_long_prompt(parsed)
            route = self._choose_tier(request, parsed, ctx)
            if route.cascade:
                response, held, route = await self._cascade(request, ctx, parsed, route)
                try:
                    await response(scope, receive, send)
                finally:
                    if held is not None:
                        held.release()
                if held is not None and ctx.tier is not None:
                    self._observe(ctx, ctx.tier, route, streamed=True)
                self._remember(route, ctx.tier, ctx)
                return
            tier, lease = await self._admit(request, ctx, parsed, route.tier, route.ladder)
            try:
                response, tier, lease = await self._answer(request, ctx, parsed, route, tier, lease)
                self._single_outcome(ctx, tier.name, route, done=not parsed.stream)
                await response(scope, receive, send)
            finally:
                lease.release()
            self._observe(ctx, tier.name, route, streamed=parsed.stream)
            self._remember(route, tier.name, ctx)
        except HTTPError as err:
            ctx.failed(err)
            if err.counts_as_tier_failure and ctx.tier:
                self.metrics.upstream_errors.labels(ctx.tier, err.error_type).inc()
            raise
        except ClientClosed:
            ctx.client_left()
            await Response(status_code=499)(scope, receive, send)

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

    def set_policy(self, profile: Profile, scorer: Scorer, judge: AnswerJudge | None, start: tuple[float, ...]) -> None:
        """Route the next request by a new routing section (tiers unchanged); see gateway.policy_watch."""
        self.profile = profile
        self.scorer = scorer
        self.judge = judge
        self.policy = policy_config(profile, start)
        self.default_class = profile.routing.default_latency_class

    def preview(self, headers: Mapping[str, str], raw: bytes) -> dict[str, Any]:
        """What `model=auto` would do with this request now, calling no tier (POST /admin/route-preview)."""
        parsed = parse_chat_request(raw)
        route, decision = self._decide(headers, parsed, "auto")
        estimates: dict[str, Any] = {}
        for name, est in route.estimates.items():
            out = parsed.max_tokens or self.tiers.by_name[name].default_max_tokens
            if self.estimator is not None:
                out = min(out, round(self.estimator.corrections(name)["output_tokens"]))
            load = self._load(name)
            estimates[name] = {
                "ttft_ms": round(est.ttft_ms, 3),
                "total_ms": round(est.total_ms, 3),
                "cost_usd": self._cost(name, route.prompt_tokens, out),
                "load": {"running": load.running, "waiting": load.waiting, "source": load.source},
            }
        assert decision is not None
        return {
            "tier": decision.tier,
            "ladder": list(route.ladder),
            "scores": list(decision.scores),
            "reason": decision.reason,
            "slo_at_risk": decision.slo_at_risk,
            "cascade": route.cascade,
            "latency_class": route.latency_class,
            "budget": {"ttft_ms": route.budget.ttft_ms, "total_ms": route.budget.total_ms},
            "prompt_tokens": route.prompt_tokens,
            "estimates": estimates,
        }

    def _load(self, tier: str) -> TierLoad:
        """The engine's own running/waiting counts when it exposes them, else this process's in-flight."""
        if self.engine_load is not None:
            seen = self.engine_load.load(self.engines.get(tier, tier))
            if seen is not None:
                return seen
        gate = self.admission.get(tier)
        if gate is None:
            return TierLoad()
        return TierLoad(running=float(gate.in_flight_seqs), waiting=float(gate.queue_depth), source="gateway")

    def _estimate(self, tier: str, prompt_tokens: int, max_tokens: int | None) -> Estimate | None:
        if self.estimator is None:
            return None
        return self.estimator.estimate(tier, prompt_tokens, max_tokens, self._load(tier))

    def _choose_tier(self, request: Request, parsed: ParsedRequest, ctx: RequestContext) -> Route:
        """The tier to try first, the larger tiers an overflow or a cascade may use, and the budget."""
        route, decision = self._decide(request.headers, parsed, parsed.checked.model)
        if decision is not None:
            self.metrics.routed(decision.tier, decision.reason)
            self.metrics.scored(decision.scores)
        ctx.routed(
            route.tier.name,
            latency_class=route.latency_class,
            reason=None if decision is None else decision.reason,
            stream=parsed.stream,
            passed_through=parsed.unknown_fields,
        )
        return route

    def _decide(self, headers: Mapping[str, str], parsed: ParsedRequest, name: str) -> tuple[Route, Decision | None]:
        """The route for `name` ('auto' or a tier), and the policy's decision when it routed. No side effects."""
        latency_class = headers.get(LATENCY_HEADER, self.default_class)
        if not _is_latency_class(latency_class):
            raise InvalidRequest(f"{LATENCY_HEADER} must be one of {', '.join(LATENCY_CLASSES)}.", param=LATENCY_HEADER)
        routing = self.profile.routing
        cascade_on = self.judge is not None and routing.cascade.enabled
        # A stream the cascade buffers reaches the caller whole, like an unstreamed answer.
        buffered = cascade_on and routing.stream_mode(latency_class) == "buffer"
        budget = request_budget(
            headers, latency_class, routing, sent_whole=not parsed.stream or (name == "auto" and buffered)
        )
        prompt_tokens = estimate_prompt_tokens(parsed.routing_text())
        decision: Decision | None = None
        cascade = False
        conversation: str | None = None
        estimates: dict[str, Estimate] = {}
        if name == "auto":
            for tier_name in self.tiers.names:
                est = self._estimate(tier_name, prompt_tokens, self._answer_tokens(tier_name, parsed))
                if est is not None:
                    estimates[tier_name] = est
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
                estimates=estimates or None,
                budget=budget,
            )
            conversation = conversation_key(headers.get(AFFINITY_HEADER), parsed.checked.messages)
            decision = self._keep_floor(decision, self.affinity.floor(conversation))
            decision = self._fit_context(decision, parsed)
            name = decision.tier
            ladder = decision.ladder
            cascade = cascade_on and len(ladder) > 1 and (not parsed.stream or buffered)
        else:
            ladder = (name,)
        tier = self.tiers.by_name.get(name)
        if tier is None:
            raise NotFound(
                f"The model '{name}' does not exist. Use 'auto' or one of: {', '.join(self.tiers.names)}.",
                param="model",
                code="model_not_found",
            )
        if decision is None and not self.limits.plan(name, parsed).fits:
            raise self.limits.too_long(parsed, ladder)
        route = Route(tier, ladder, budget, latency_class, cascade, prompt_tokens, conversation, estimates)
        return route, decision

    def _fit_context(self, decision: Decision, parsed: ParsedRequest) -> Decision:
        """Keep only the ladder's tiers whose context holds the prompt; start at the first of them
        (route reason `context-fit`), or refuse with a 400 naming the limit when none does."""
        fits = fitting(decision.ladder, lambda name: self.limits.plan(name, parsed))
        if not fits:
            raise self.limits.too_long(parsed, decision.ladder)
        if fits == decision.ladder:
            return decision
        reason = decision.reason if fits[0] == decision.tier else "context-fit"
        return replace(decision, tier=fits[0], tier_index=self.tiers.names.index(fits[0]), ladder=fits, reason=reason)

    def _answer_tokens(self, tier: str, parsed: ParsedRequest) -> int | None:
        """The caller's max_tokens as `tier` will see it (capped to its context); None when not given."""
        if parsed.max_tokens is None:
            return None
        return max(self.limits.plan(tier, parsed).max_tokens, 1)

    def _answer_budget(self, ctx: RequestContext, parsed: ParsedRequest, tier: Tier) -> OutputPlan:
        """`tier`'s answer budget for this request: a 400 when the prompt does not fit it, a header when
        the caller's max_tokens was lowered (the last tier asked wins)."""
        plan = self.limits.plan(tier.name, parsed)
        if not plan.fits:
            raise self.limits.too_long(parsed, (tier.name,))
        ctx.extra_headers = [h for h in ctx.extra_headers if h[0] != CAPPED_HEADER]
        if plan.capped:
            ctx.extra_headers.append((CAPPED_HEADER, str(plan.max_tokens).encode()))
        return plan

    def _keep_floor(self, decision: Decision, floor: int | None) -> Decision:
        """Start no lower than the tier that answered this conversation before (gateway.affinity)."""
        names = self.tiers.names
        if floor is None or floor <= names.index(decision.tier):
            return decision
        up = tuple(n for n in decision.ladder if names.index(n) >= floor) or (names[min(floor, len(names) - 1)],)
        return replace(decision, tier=up[0], tier_index=names.index(up[0]), ladder=up, reason="conversation-affinity")

    def _cost(self, tier: str, prompt_tokens: int, completion_tokens: int) -> float:
        econ = self.economics.get(tier)
        return 0.0 if econ is None else econ.cost_usd(prompt_tokens, completion_tokens)

    def _account(self, ctx: RequestContext, tier: str, cost_usd: float, spent_before_usd: float) -> None:
        """The answering tier's spend, by key, and the request's savings against always using the largest
        tier: the answer's tokens at the top tier's prices, minus the answer and every attempt before it."""
        self.metrics.spent(tier, cost_usd, ctx.key_id)
        top = self._cost(self.tiers.names[-1], ctx.prompt_tokens, ctx.completion_tokens)
        self.metrics.saved(tier, top - cost_usd - spent_before_usd)

    def _slo(self, ctx: RequestContext, budget: Budget) -> str:
        """'met' or 'missed' so far, when the headers go out: for an answer sent whole, its total; for
        a stream, the time to its headers (no first token yet counts as the time so far)."""
        first_ms = None if ctx.ttft_s is None else ctx.ttft_s * 1e3
        return "met" if budget.met(first_ms, (time.perf_counter() - ctx.t0) * 1e3) else "missed"

    def _single_outcome(self, ctx: RequestContext, tier: str, route: Route, *, done: bool) -> None:
        cost = self._cost(tier, ctx.prompt_tokens, ctx.completion_tokens) if done else None
        tried = (*ctx.fallen_from, tier) if ctx.fallen_from else (tier,)
        ctx.attempted(tried, 0, cost, self._slo(ctx, route.budget))

    def _deadline(self, ctx: RequestContext) -> float:
        """The request's deadline on the perf_counter clock: every try and wait fits before it."""
        return ctx.t0 + self.timeout_s

    async def _answer(
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
                    body = self._upstream_body(ctx, parsed, tier)
                    if parsed.stream:
                        response = await self._stream(request, ctx, tier, parsed, body, lease)
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
                lease = await self._lease_for_attempt(request, ctx, parsed, route, tier)
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

    def _remember(self, route: Route, tier: str | None, ctx: RequestContext) -> None:
        # A fallback's tier says how the fleet fared, not how hard the conversation is: no floor from it.
        if route.conversation is not None and tier in self.tiers.by_name and not ctx.fallen_from:
            self.affinity.record(route.conversation, self.tiers.names.index(tier))

    def _observe(self, ctx: RequestContext, tier: str, route: Route, *, streamed: bool) -> None:
        """After the last byte: count the SLO, the spend, and teach the estimator what this tier did."""
        if ctx.client_closed or ctx.error_code is not None:
            return
        total_ms = (time.perf_counter() - ctx.t0) * 1e3
        ttft_ms = None if ctx.ttft_s is None else ctx.ttft_s * 1e3
        met = route.budget.met(ttft_ms, total_ms)
        self.metrics.slo_result(route.latency_class, "met" if met else "missed")
        self._account(ctx, tier, self._cost(tier, ctx.prompt_tokens, ctx.completion_tokens), route.spent_before_usd)
        if self.estimator is not None:
            self.estimator.observe(
                tier,
                prompt_tokens=ctx.prompt_tokens or route.prompt_tokens,
                completion_tokens=ctx.completion_tokens,
                ttft_ms=ttft_ms if streamed else None,
                total_ms=total_ms,
            )

    async def _lease_for_attempt(
        self, request: Request, ctx: RequestContext, parsed: ParsedRequest, route: Route, tier: Tier
    ) -> Lease:
        """A cascade attempt's lease on `tier`: at once if it fits, else after the tier's queue (no overflow:
        the cascade itself decides which tier answers)."""
        tokens = self.limits.plan(tier.name, parsed).kv_tokens
        gate = self.admission[tier.name]
        realtime = ctx.latency_class == "realtime"
        lease = gate.try_lease(tokens, realtime=realtime)
        if lease is None:
            lease = await unless_disconnected(request.receive, gate.lease(tokens, realtime=realtime))
        return lease

    async def _attempt(
        self, request: Request, ctx: RequestContext, parsed: ParsedRequest, route: Route, name: str
    ) -> TierAnswer:
        """One unstreamed call to tier `name` with token logprobs, under its own lease."""
        tier = self.tiers.by_name[name]
        lease = await self._lease_for_attempt(request, ctx, parsed, route, tier)
        try:
            body = dict(parsed.body)
            body["model"] = tier.upstream_model
            body["stream"] = False
            body.pop("stream_options", None)
            body["logprobs"] = True
            apply_plan(body, self._answer_budget(ctx, parsed, tier))
            t = time.perf_counter()
            raw = orjson.dumps(body)
            call = self.resilience.call(
                name,
                lambda try_s: self.client.complete(tier.chat_url, raw, timeout_s=try_s),
                self._deadline(ctx),
            )
            reply = await unless_disconnected(request.receive, call)
            elapsed = ctx.waited_since(t) - t
        finally:
            lease.release()
        data = _json_object(reply.body)
        prompt, completion = usage_tokens(data.get("usage")) or (0, 0)
        if self.estimator is not None:
            self.estimator.observe(
                name, prompt_tokens=prompt, completion_tokens=completion, ttft_ms=None, total_ms=elapsed * 1e3
            )
        return TierAnswer(
            name,
            data,
            answer_text(data),
            answer_logprobs(data),
            prompt,
            completion,
            self._cost(name, prompt, completion),
            elapsed * 1e3,
        )

    async def _cascade(
        self, request: Request, ctx: RequestContext, parsed: ParsedRequest, route: Route
    ) -> tuple[Response, Lease | None, Route]:
        """Ask the cheapest accepted tier, judge, climb while the verifier doubts and the budget allows.

        Returns the response, the lease of the last tier's live stream when it streams one (the
        caller releases it once the response is sent), and the route whose budget the answer is
        held to (a live stream's first token no longer waits for its last).
        """
        assert self.judge is not None
        cascade = self.profile.routing.cascade

        def estimate(name: str) -> Estimate:
            est = self._estimate(name, route.prompt_tokens, self._answer_tokens(name, parsed))
            return est if est is not None else Estimate(0.0, 0.0)

        outcome = await run_cascade(
            parsed.routing_text(),
            route.ladder,
            lambda name: self._attempt(request, ctx, parsed, route, name),
            self.judge,
            max_escalations=cascade.max_escalations,
            budget=route.budget,
            estimate=estimate,
            started=ctx.t0,
            stream_last=parsed.stream,
        )
        if outcome.stream_tier is None:
            return self._cascade_response(ctx, parsed, route, outcome), None, route
        live = replace(
            route,
            budget=request_budget(request.headers, route.latency_class, self.profile.routing, sent_whole=False),
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
            return self._cascade_response(ctx, parsed, route, kept), None, route
        except BaseException:
            self._count_attempts(outcome, ctx.key_id)
            raise
        self._count_attempts(outcome, ctx.key_id)
        return response, lease, live

    async def _stream_top(
        self, request: Request, ctx: RequestContext, parsed: ParsedRequest, route: Route, outcome: CascadeOutcome
    ) -> tuple[Response, Lease]:
        """The cascade climbed to the last tier of a streamed request: relay that tier's stream live.

        The earlier attempts are counted by the caller, which knows whether one of them is returned instead.
        """
        assert outcome.stream_tier is not None
        tier = self.tiers.by_name[outcome.stream_tier]
        ctx.moved_to(tier.name, ctx.route_reason or "cascade")
        lease = await self._lease_for_attempt(request, ctx, parsed, route, tier)
        try:
            response = await self._stream(request, ctx, tier, parsed, self._upstream_body(ctx, parsed, tier), lease)
        except BaseException:
            lease.release()
            raise
        tried = (*outcome.tiers_tried, tier.name)
        # The streamed answer's cost is known only at its end (metrics count it); the header would lie.
        ctx.attempted(tried, len(outcome.escalations), None, self._slo(ctx, route.budget))
        return response, lease

    def _count_attempts(self, outcome: CascadeOutcome, key: str) -> None:
        for a in outcome.answers:
            if a is not outcome.answer:
                self.metrics.attempt(a.tier, a.prompt_tokens, a.completion_tokens, a.cost_usd, key)
        for src, dst, why in outcome.escalations:
            self.metrics.escalations.labels(src, dst, why).inc()
        for src, dst in outcome.fallbacks:
            self.metrics.fallbacks.labels(src, dst).inc()

    def _cascade_response(
        self, ctx: RequestContext, parsed: ParsedRequest, route: Route, outcome: CascadeOutcome
    ) -> Response:
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
        slo = self._slo(ctx, route.budget)
        ctx.attempted(tuple(outcome.tiers_tried), len(outcome.escalations), outcome.cost_usd, slo)
        self.metrics.slo_result(route.latency_class, slo)
        self._account(ctx, answer.tier, answer.cost_usd, outcome.cost_usd - answer.cost_usd)
        if parsed.stream:
            opts = parsed.checked.stream_options
            return Response(
                sse_from_completion(data, wants_usage=bool(opts and opts.include_usage)),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )
        return Response(orjson.dumps(data), media_type="application/json")

    async def _admit(
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

    def _upstream_body(self, ctx: RequestContext, parsed: ParsedRequest, tier: Tier) -> bytes:
        # Always a cap: without one a caller could hold a tier for its whole context; with the caller's
        # own, never more than the tier's context leaves after the prompt.
        apply_plan(parsed.body, self._answer_budget(ctx, parsed, tier))
        return parsed.upstream_body(tier.upstream_model, force_usage=True)

    async def _complete(self, request: Request, ctx: RequestContext, tier: Tier, body: bytes) -> Response:
        t = time.perf_counter()
        call = self.resilience.call(
            tier.name,
            lambda try_s: self.client.complete(tier.chat_url, body, timeout_s=try_s),
            self._deadline(ctx),
        )
        reply = await unless_disconnected(request.receive, call)
        now = time.perf_counter()
        ctx.upstream_s += now - t
        ctx.ttft_s = now - ctx.t0
        data = _json_object(reply.body)
        data["model"] = tier.name
        ctx.count_usage(data.get("usage"))
        return Response(orjson.dumps(data), media_type="application/json")

    async def _stream(
        self, request: Request, ctx: RequestContext, tier: Tier, parsed: ParsedRequest, body: bytes, lease: Lease
    ) -> Response:
        t = time.perf_counter()
        deadline = self._deadline(ctx)

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


def _is_latency_class(value: str) -> TypeGuard[LatencyClass]:
    return value in LATENCY_CLASSES


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise UpstreamFailed("The tier's answer is not a JSON object.")
    return data
