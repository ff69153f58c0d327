"""One tier call, made to survive the faults that asking again can fix.

`Resilience.call` runs a call against one tier, retrying connect errors, 429s, 5xx answers, streams
that broke before their first event and per-try timeouts, with exponential backoff and jitter
(router.runtime.retry), always inside the request's deadline: each try gets at most what is left of
it, and a wait that would not leave room for another try is not taken. A tier's `Retry-After`
replaces the backoff, and a `Retry-After` past the deadline ends the retries at once. Bad requests
(4xx) are never retried and never count against the tier.

Every try's outcome feeds the tier's circuit breaker (gateway.tiers); a breaker that refuses the
call raises `TierUnavailable` (a 503 with Retry-After), which the service answers with a fallback to
another tier for model=auto, and passes on for a pinned tier. Which tier comes next is the service's
choice (gateway.attempts): only it knows the route.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from deployments.profile import ResilienceSpec
from gateway.errors import HTTPError, TierUnavailable, UpstreamTimeout
from gateway.metrics import GatewayMetrics
from gateway.tiers import TierRegistry
from router.runtime.retry import RetryPolicy

T = TypeVar("T")

# Faults where a second try can succeed. A 404 from the tier ("misconfigured") and an answer that is
# not JSON ("bad_answer") would fail the same way again.
RETRYABLE_FAULTS = frozenset({"connect", "timeout", "status_429", "status_5xx", "broken"})


def retry_policy(spec: ResilienceSpec) -> RetryPolicy:
    return RetryPolicy(
        max_retries=spec.max_retries,
        base_delay_s=spec.retry_base_delay_ms / 1e3,
        max_delay_s=spec.retry_max_delay_ms / 1e3,
    )


class Resilience:
    def __init__(
        self,
        spec: ResilienceSpec,
        tiers: TierRegistry,
        metrics: GatewayMetrics,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.policy = retry_policy(spec)
        self.try_timeout_s = spec.try_timeout_s
        self.fallback = spec.fallback
        self.tiers = tiers
        self.metrics = metrics
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock

    async def call(self, tier: str, op: Callable[[float], Awaitable[T]], deadline: float) -> T:
        """`op(try_timeout_s)` against `tier`, retried on tier faults until it succeeds or `deadline`
        (seconds on this object's clock, perf_counter by default) leaves no room for another try.

        Raises the last try's HTTPError, TierUnavailable when the breaker refuses a try, or
        UpstreamTimeout when the deadline has passed before a try could start.
        """
        retry = 0
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise UpstreamTimeout("The request's time ran out before the tier answered.")
            if not self.tiers.allow(tier):
                raise TierUnavailable(
                    f"The tier '{tier}' is failing and refuses calls for now; retry later.",
                    retry_after_s=max(round(self.tiers.retry_after_s(tier)), 1),
                )
            per_try = remaining if self.try_timeout_s is None else min(self.try_timeout_s, remaining)
            try:
                result = await op(per_try)
            except HTTPError as err:
                if not err.counts_as_tier_failure:
                    self.tiers.neutral(tier)
                    raise
                self.tiers.failed(tier)
                fault: str = getattr(err, "fault", "bad_answer")
                if fault not in RETRYABLE_FAULTS:
                    raise
                delay = self.policy.delay_s(
                    retry,
                    remaining_s=deadline - self._clock(),
                    retry_after_s=getattr(err, "retry_after_s", None),
                    rng=self._rng,
                )
                if delay is None:
                    raise
                self.metrics.retries.labels(tier, fault).inc()
                await self._sleep(delay)
                retry += 1
                continue
            except BaseException:
                # Cancelled (the caller left) or a fault of the gateway: nothing learnt about the tier.
                self.tiers.neutral(tier)
                raise
            self.tiers.succeeded(tier)
            return result
