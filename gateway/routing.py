"""Which tier a request goes to first, which tiers it may climb to, and the budget it is held to.

The policy itself is router.runtime.policy's (pure); this module gathers its inputs for one
request: the latency class and budget from the headers, every tier's latency estimate under its
engine's load, the conversation's affinity floor, and which tiers' contexts hold the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypeGuard

from deployments.profile import LATENCY_CLASSES, LatencyClass, Profile
from gateway.admission import TierAdmission, estimate_prompt_tokens
from gateway.affinity import HEADER as AFFINITY_HEADER
from gateway.affinity import AffinityStore, conversation_key
from gateway.budgets import request_budget
from gateway.context import RequestContext
from gateway.engine_load import EngineLoadPoller
from gateway.errors import InvalidRequest, NotFound
from gateway.limits import TierLimits
from gateway.metrics import GatewayMetrics
from gateway.protocol import ParsedRequest
from gateway.tiers import Tier, TierRegistry
from router.runtime.cascade import AnswerJudge
from router.runtime.context_fit import fitting
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
    # The engine load each estimate assumed: the estimator's observation compares against the
    # prediction at this load, so its corrections do not learn the load twice.
    loads: Mapping[str, TierLoad] = field(default_factory=dict)
    # USD already spent on cascade attempts before the tier that answers (a live stream's climb).
    spent_before_usd: float = 0.0


class RouteChooser:
    """Turns a parsed request and its headers into a Route; remembers which tier answered a conversation."""

    def __init__(
        self,
        profile: Profile,
        *,
        tiers: TierRegistry,
        scorer: Scorer,
        metrics: GatewayMetrics,
        admission: Mapping[str, TierAdmission],
        limits: TierLimits,
        estimator: LatencyEstimator | None = None,
        judge: AnswerJudge | None = None,
        start_thresholds: tuple[float, ...] = (),
        engine_load: EngineLoadPoller | None = None,
    ) -> None:
        self.profile = profile
        self.tiers = tiers
        self.scorer = scorer
        self.metrics = metrics
        self.admission = admission
        self.limits = limits
        self.estimator = estimator
        self.judge = judge
        self.policy = policy_config(profile, start_thresholds)
        self.default_class = profile.routing.default_latency_class
        self.engine_load = engine_load
        self.engines = {t.name: t.engine for t in profile.tiers}
        self.affinity = AffinityStore()

    def set_policy(self, profile: Profile, scorer: Scorer, judge: AnswerJudge | None, start: tuple[float, ...]) -> None:
        """Route the next request by a new routing section (tiers unchanged); see gateway.policy_watch."""
        self.profile = profile
        self.scorer = scorer
        self.judge = judge
        self.policy = policy_config(profile, start)
        self.default_class = profile.routing.default_latency_class

    def load(self, tier: str) -> TierLoad:
        """The engine's own running/waiting counts when it exposes them, else this process's in-flight."""
        if self.engine_load is not None:
            seen = self.engine_load.load(self.engines.get(tier, tier))
            if seen is not None:
                return seen
        gate = self.admission.get(tier)
        if gate is None:
            return TierLoad()
        return TierLoad(running=float(gate.in_flight_seqs), waiting=float(gate.queue_depth), source="gateway")

    def estimate(
        self, tier: str, prompt_tokens: int, max_tokens: int | None, load: TierLoad | None = None
    ) -> Estimate | None:
        """`tier`'s expected times for a request of this size under `load` (default: its engine's load
        now); None without an estimator."""
        if self.estimator is None:
            return None
        return self.estimator.estimate(tier, prompt_tokens, max_tokens, self.load(tier) if load is None else load)

    def answer_tokens(self, tier: str, parsed: ParsedRequest) -> int | None:
        """The caller's max_tokens as `tier` will see it (capped to its context); None when not given."""
        if parsed.max_tokens is None:
            return None
        return max(self.limits.plan(tier, parsed).max_tokens, 1)

    def choose(self, headers: Mapping[str, str], parsed: ParsedRequest, ctx: RequestContext) -> Route:
        """The tier to try first, the larger tiers an overflow or a cascade may use, and the budget."""
        route, decision = self.decide(headers, parsed, parsed.checked.model)
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

    def decide(self, headers: Mapping[str, str], parsed: ParsedRequest, name: str) -> tuple[Route, Decision | None]:
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
        loads: dict[str, TierLoad] = {}
        if name == "auto":
            for tier_name in self.tiers.names:
                load = self.load(tier_name)
                est = self.estimate(tier_name, prompt_tokens, self.answer_tokens(tier_name, parsed), load)
                if est is not None:
                    estimates[tier_name] = est
                    loads[tier_name] = load
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
        if decision is None and self.estimator is not None:
            # A pinned tier is not estimated, but its observation after the last byte is still
            # compared with the prediction at the load it met (else busy periods teach the ratios).
            loads[name] = self.load(name)
        if decision is None and not self.limits.plan(name, parsed).fits:
            raise self.limits.too_long(parsed, ladder)
        route = Route(tier, ladder, budget, latency_class, cascade, prompt_tokens, conversation, estimates, loads=loads)
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

    def _keep_floor(self, decision: Decision, floor: int | None) -> Decision:
        """Start no lower than the tier that answered this conversation before (gateway.affinity)."""
        names = self.tiers.names
        if floor is None or floor <= names.index(decision.tier):
            return decision
        up = tuple(n for n in decision.ladder if names.index(n) >= floor) or (names[min(floor, len(names) - 1)],)
        return replace(decision, tier=up[0], tier_index=names.index(up[0]), ladder=up, reason="conversation-affinity")

    def remember(self, route: Route, tier: str | None, ctx: RequestContext) -> None:
        """Record the tier that answered the route's conversation: its next turn starts no lower."""
        # A fallback's tier says how the fleet fared, not how hard the conversation is: no floor from it.
        if route.conversation is not None and tier in self.tiers.by_name and not ctx.fallen_from:
            self.affinity.record(route.conversation, self.tiers.names.index(tier))


def _is_latency_class(value: str) -> TypeGuard[LatencyClass]:
    return value in LATENCY_CLASSES
