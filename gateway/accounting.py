"""What a request cost and how it fared, counted once its answer is done.

The SLO result, the spend by key and the savings against always using the top tier go to the
metrics; the times the tier took go to the latency estimator, so the next request's estimates
learn from this one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from deployments.economics import TierEconomics
from gateway.context import RequestContext
from gateway.metrics import GatewayMetrics
from gateway.routing import Route
from router.runtime.slo import Budget, LatencyEstimator, TierLoad


def slo_so_far(ctx: RequestContext, budget: Budget) -> str:
    """'met' or 'missed' so far, when the headers go out: for an answer sent whole, its total; for
    a stream, the time to its headers (no first token yet counts as the time so far)."""
    first_ms = None if ctx.ttft_s is None else ctx.ttft_s * 1e3
    return "met" if budget.met(first_ms, (time.perf_counter() - ctx.t0) * 1e3) else "missed"


class Accounting:
    """Prices, spend and savings metrics, and the estimator's observations, for every answered request."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        economics: Mapping[str, TierEconomics],
        estimator: LatencyEstimator | None,
        top_tier: str,
    ) -> None:
        self.metrics = metrics
        self.economics = economics
        self.estimator = estimator
        self.top_tier = top_tier

    def cost(self, tier: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD of this many tokens at `tier`'s prices (0 for a tier with no prices)."""
        econ = self.economics.get(tier)
        return 0.0 if econ is None else econ.cost_usd(prompt_tokens, completion_tokens)

    def account(self, ctx: RequestContext, tier: str, cost_usd: float, spent_before_usd: float) -> None:
        """The answering tier's spend, by key, and the request's savings against always using the largest
        tier: the answer's tokens at the top tier's prices, minus the answer and every attempt before it."""
        self.metrics.spent(tier, cost_usd, ctx.key_id)
        top = self.cost(self.top_tier, ctx.prompt_tokens, ctx.completion_tokens)
        self.metrics.saved(tier, top - cost_usd - spent_before_usd)

    def single_outcome(self, ctx: RequestContext, tier: str, route: Route, *, done: bool) -> None:
        """The outcome headers of a request one tier answers (after any fallbacks); its cost once `done`."""
        cost = self.cost(tier, ctx.prompt_tokens, ctx.completion_tokens) if done else None
        tried = (*ctx.fallen_from, tier) if ctx.fallen_from else (tier,)
        ctx.attempted(tried, 0, cost, slo_so_far(ctx, route.budget))

    def observe(self, ctx: RequestContext, tier: str, route: Route, *, streamed: bool) -> None:
        """After the last byte: count the SLO, the spend, and teach the estimator what this tier did."""
        if ctx.client_closed or ctx.error_code is not None:
            return
        total_ms = (time.perf_counter() - ctx.t0) * 1e3
        ttft_ms = None if ctx.ttft_s is None else ctx.ttft_s * 1e3
        met = route.budget.met(ttft_ms, total_ms)
        self.metrics.slo_result(route.latency_class, "met" if met else "missed")
        self.account(ctx, tier, self.cost(tier, ctx.prompt_tokens, ctx.completion_tokens), route.spent_before_usd)
        if self.estimator is not None:
            self.estimator.observe(
                tier,
                prompt_tokens=ctx.prompt_tokens or route.prompt_tokens,
                completion_tokens=ctx.completion_tokens,
                ttft_ms=ttft_ms if streamed else None,
                total_ms=total_ms,
                load=route.loads.get(tier),
            )

    def observe_attempt(
        self, tier: str, prompt_tokens: int, completion_tokens: int, elapsed_ms: float, load: TierLoad | None = None
    ) -> None:
        """A cascade attempt's unstreamed answer: only its total time was seen, under `load` when known."""
        if self.estimator is not None:
            self.estimator.observe(
                tier,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                ttft_ms=None,
                total_ms=elapsed_ms,
                load=load,
            )
