"""When to try a tier again, and how long to wait first: exponential backoff with jitter, bounded
by the request's deadline and by the tier's own `Retry-After`.

Pure: the caller passes the random draw's source and the time left, so every delay is reproducible
in a test. The gateway (gateway/resilience.py) decides which faults are retryable at all; this module
only answers "wait how long, or stop".
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of one tier call (seconds). `max_retries` 0 turns retrying off."""

    max_retries: int = 2
    base_delay_s: float = 0.05
    max_delay_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("RetryPolicy needs max_retries >= 0 and 0 <= base_delay_s <= max_delay_s")
        if self.multiplier < 1.0:
            raise ValueError("RetryPolicy.multiplier must be at least 1")

    def backoff_cap_s(self, retry: int) -> float:
        """The longest wait before retry number `retry` (0 for the first retry)."""
        return min(self.max_delay_s, self.base_delay_s * self.multiplier**retry)

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        """A wait in [cap/2, cap]: "equal jitter" spreads callers that failed together apart while
        keeping a floor, so a retry never lands on a tier that failed a microsecond ago."""
        cap = self.backoff_cap_s(retry)
        return cap / 2 + rng.random() * cap / 2

    def delay_s(
        self, retry: int, *, remaining_s: float, retry_after_s: float | None, rng: random.Random
    ) -> float | None:
        """Seconds to wait before retry number `retry`, or None when the call must not be retried.

        None when the retries are spent, or when the wait would leave no time in the request's
        deadline (`remaining_s`). A tier's `Retry-After` replaces the backoff: it knows when it will
        have room; when that is past the deadline, waiting for it would only turn a fast error into a
        slow one, so the answer is None.
        """
        if retry >= self.max_retries or remaining_s <= 0:
            return None
        wait = retry_after_s if retry_after_s is not None else self.backoff_s(retry, rng)
        if wait >= remaining_s:
            return None
        return max(wait, 0.0)
