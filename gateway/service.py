"""The chat-completions service: read -> validate -> decide -> call the tier -> relay the answer.

Route handlers stay a line long; this is the order a request goes through, each step in its own
module: the route (gateway.routing), the tier call with retries and fallback (gateway.attempts) or
the live cascade (gateway.cascade_serve), and the accounting after the last byte (gateway.accounting).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from deployments.economics import TierEconomics
from deployments.profile import Profile
from gateway.accounting import Accounting
from gateway.admission import TierAdmission
from gateway.attempts import TierCaller
from gateway.cascade_serve import LiveCascade
from gateway.context import context_of
from gateway.disconnect import ClientClosed
from gateway.engine_load import EngineLoadPoller
from gateway.errors import HTTPError, PayloadTooLarge
from gateway.limits import TierLimits
from gateway.metrics import GatewayMetrics
from gateway.protocol import parse_chat_request
from gateway.resilience import Resilience
from gateway.routing import RouteChooser
from gateway.tiers import TierRegistry
from gateway.upstream import UpstreamClient
from router.runtime.cascade import AnswerJudge
from router.runtime.policy import Scorer
from router.runtime.slo import LatencyEstimator


class ChatService:
    """One process's chat endpoint: the parts below, built once from the profile and wired together."""

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
        self.metrics = metrics
        self.economics = economics or {}
        self.max_body_bytes = profile.gateway.max_body_bytes
        self.limits = limits if limits is not None else TierLimits.from_specs(profile.tiers)
        self.chooser = RouteChooser(
            profile,
            tiers=tiers,
            scorer=scorer,
            metrics=metrics,
            admission=admission,
            limits=self.limits,
            estimator=estimator,
            judge=judge,
            start_thresholds=start_thresholds,
            engine_load=engine_load,
        )
        self.caller = TierCaller(
            tiers=tiers,
            client=client,
            metrics=metrics,
            admission=admission,
            limits=self.limits,
            resilience=resilience or Resilience(profile.gateway.resilience, tiers, metrics),
            timeout_s=profile.gateway.request_timeout_s,
        )
        self.accounting = Accounting(metrics, self.economics, estimator, tiers.names[-1])
        self.cascade = LiveCascade(
            chooser=self.chooser, caller=self.caller, accounting=self.accounting, metrics=metrics
        )

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
            route = self.chooser.choose(request.headers, parsed, ctx)
            if route.cascade:
                response, held, route = await self.cascade.serve(request, ctx, parsed, route)
                try:
                    await response(scope, receive, send)
                finally:
                    if held is not None:
                        held.release()
                if held is not None and ctx.tier is not None:
                    self.accounting.observe(ctx, ctx.tier, route, streamed=True)
                self.chooser.remember(route, ctx.tier, ctx)
                return
            tier, lease = await self.caller.admit(request, ctx, parsed, route.tier, route.ladder)
            try:
                response, tier, lease = await self.caller.answer(request, ctx, parsed, route, tier, lease)
                self.accounting.single_outcome(ctx, tier.name, route, done=not parsed.stream)
                await response(scope, receive, send)
            finally:
                lease.release()
            self.accounting.observe(ctx, tier.name, route, streamed=parsed.stream)
            self.chooser.remember(route, tier.name, ctx)
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
        self.chooser.set_policy(profile, scorer, judge, start)

    def preview(self, headers: Mapping[str, str], raw: bytes) -> dict[str, Any]:
        """What `model=auto` would do with this request now, calling no tier (POST /admin/route-preview)."""
        parsed = parse_chat_request(raw)
        route, decision = self.chooser.decide(headers, parsed, "auto")
        estimator = self.chooser.estimator
        estimates: dict[str, Any] = {}
        for name, est in route.estimates.items():
            out = parsed.max_tokens or self.chooser.tiers.by_name[name].default_max_tokens
            if estimator is not None:
                out = min(out, round(estimator.corrections(name)["output_tokens"]))
            load = self.chooser.load(name)
            estimates[name] = {
                "ttft_ms": round(est.ttft_ms, 3),
                "total_ms": round(est.total_ms, 3),
                "cost_usd": self.accounting.cost(name, route.prompt_tokens, out),
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
