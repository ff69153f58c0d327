"""A per-tier circuit breaker: a pure state machine with an injected clock.

    closed --(failure rate >= threshold over >= min_calls in the window)--> open
    open --(open_s elapsed)--> half-open
    half-open --(the one probe succeeds)--> closed      (the window starts afresh)
    half-open --(the one probe fails)--> open           (another open_s)

Half-open admits exactly one call, the probe; every other call is refused until it reports. A
breaker is never opened when the caller says it may not (`may_open=False`): the gateway passes that
for the last healthy tier, since refusing every request is worse than trying a failing tier.

Outcomes are counted in time buckets (a tenth of the window each), so memory stays fixed whatever
the request rate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum


class BreakerState(IntEnum):
    """The values are those of the `tiergate_breaker_state` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a tier's breaker opens and how long it stays open (seconds)."""

    failure_rate: float = 0.5
    min_calls: int = 10
    window_s: float = 30.0
    open_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 < self.failure_rate <= 1.0:
            raise ValueError("BreakerConfig.failure_rate must be in (0, 1]")
        if self.min_calls < 1 or self.window_s <= 0 or self.open_s <= 0:
            raise ValueError("BreakerConfig needs min_calls >= 1, window_s > 0 and open_s > 0")


_BUCKETS = 10


class CircuitBreaker:
    """One tier's breaker. `clock` returns seconds (monotonic); tests pass their own. `on_change`
    hears every transition (the gateway's log line and metrics), lazy ones included: open turns
    half-open when the state is next read."""

    def __init__(
        self,
        config: BreakerConfig,
        clock: Callable[[], float],
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probe_out = False
        # [bucket start, calls, failures], oldest first.
        self._buckets: deque[list[float]] = deque()

    @property
    def state(self) -> BreakerState:
        """The state now: an open breaker whose time is up reads as half-open."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.config.open_s:
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def admits(self) -> bool:
        """Whether a call would be let through now (no side effect: routing asks this)."""
        if self._state is BreakerState.CLOSED:  # the common case, asked per request: no clock read
            return True
        state = self.state
        return state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and not self._probe_out)

    def allow(self) -> bool:
        """Let one call through or refuse it; in half-open the call let through is the probe."""
        if self._state is BreakerState.CLOSED:
            return True
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_out:
            self._probe_out = True
            return True
        return False

    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it is not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(self.config.open_s - (self._clock() - self._opened_at), 0.0)

    def record_success(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._probe_out = False
            self._buckets.clear()
            self._move(BreakerState.CLOSED)
            return
        self._count(failed=False)

    def record_failure(self, *, may_open: bool = True) -> None:
        """A tier fault. `may_open=False` counts it but keeps the breaker from opening."""
        if self._state is BreakerState.HALF_OPEN:
            self._probe_out = False
            if may_open:
                self._open()
            else:
                self._buckets.clear()
                self._move(BreakerState.CLOSED)
            return
        if self._state is BreakerState.OPEN:
            return
        self._count(failed=True)
        calls, failures = self.counts()
        if may_open and calls >= self.config.min_calls and failures >= self.config.failure_rate * calls:
            self._open()

    def record_neutral(self) -> None:
        """A call that ended saying nothing about the tier (a bad request, a caller who left):
        a probe's slot is handed back so the next call can probe."""
        if self._state is BreakerState.HALF_OPEN:
            self._probe_out = False

    def counts(self) -> tuple[int, int]:
        """(calls, failures) inside the window now."""
        self._expire(self._clock())
        return int(sum(b[1] for b in self._buckets)), int(sum(b[2] for b in self._buckets))

    def _count(self, *, failed: bool) -> None:
        now = self._clock()
        self._expire(now)
        width = self.config.window_s / _BUCKETS
        if not self._buckets or now - self._buckets[-1][0] >= width:
            self._buckets.append([now, 0.0, 0.0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        if failed:
            bucket[2] += 1

    def _expire(self, now: float) -> None:
        while self._buckets and now - self._buckets[0][0] >= self.config.window_s:
            self._buckets.popleft()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._buckets.clear()
        self._move(BreakerState.OPEN)

    def _move(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)
