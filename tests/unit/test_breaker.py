"""The per-tier circuit breaker as a state machine, on a clock the test moves."""

from __future__ import annotations

import pytest

from router.runtime.breaker import BreakerConfig, BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _state(breaker: CircuitBreaker) -> BreakerState:
    # Read through a call: the state changes between reads, which a narrowed attribute would hide from mypy.
    return breaker.state


CONFIG = BreakerConfig(failure_rate=0.5, min_calls=4, window_s=10.0, open_s=5.0)


def _breaker(config: BreakerConfig = CONFIG) -> tuple[CircuitBreaker, Clock, list[BreakerState]]:
    clock = Clock()
    seen: list[BreakerState] = []
    return CircuitBreaker(config, clock, seen.append), clock, seen


def test_failures_under_the_minimum_count_never_open_it() -> None:
    breaker, _, _ = _breaker()
    for _ in range(3):
        breaker.record_failure()
    assert _state(breaker) is BreakerState.CLOSED and breaker.allow()


def test_opens_when_the_failure_rate_reaches_the_threshold_over_the_minimum() -> None:
    breaker, _, seen = _breaker()
    breaker.record_success()
    breaker.record_success()
    breaker.record_failure()
    assert _state(breaker) is BreakerState.CLOSED  # 1 of 3: under the minimum count
    breaker.record_failure()  # 2 of 4 = 50%
    assert _state(breaker) is BreakerState.OPEN
    assert not breaker.allow() and not breaker.admits()
    assert seen == [BreakerState.OPEN]


def test_a_low_failure_rate_keeps_it_closed() -> None:
    breaker, _, _ = _breaker()
    for _ in range(20):
        breaker.record_success()
        breaker.record_success()
        breaker.record_failure()
    assert _state(breaker) is BreakerState.CLOSED
    assert breaker.counts() == (60, 20)


def test_old_outcomes_leave_the_window() -> None:
    breaker, clock, _ = _breaker()
    for _ in range(3):
        breaker.record_failure()
    clock.now += 11.0
    breaker.record_failure()
    assert breaker.counts() == (1, 1)
    assert _state(breaker) is BreakerState.CLOSED


def test_half_open_after_the_open_time_admits_exactly_one_probe() -> None:
    breaker, clock, seen = _breaker()
    for _ in range(4):
        breaker.record_failure()
    assert breaker.retry_after_s() == pytest.approx(5.0)
    clock.now += 4.9
    assert _state(breaker) is BreakerState.OPEN and not breaker.allow()
    clock.now += 0.2
    assert _state(breaker) is BreakerState.HALF_OPEN and breaker.admits()
    assert breaker.allow()  # the probe
    assert not breaker.allow() and not breaker.admits()  # nobody else while it is out
    assert seen == [BreakerState.OPEN, BreakerState.HALF_OPEN]


def test_a_successful_probe_closes_it_with_a_fresh_window() -> None:
    breaker, clock, seen = _breaker()
    for _ in range(4):
        breaker.record_failure()
    clock.now += 5.0
    assert breaker.allow()
    breaker.record_success()
    assert _state(breaker) is BreakerState.CLOSED and breaker.counts() == (0, 0)
    assert seen[-1] is BreakerState.CLOSED


def test_a_failed_probe_opens_it_again_for_another_open_time() -> None:
    breaker, clock, _ = _breaker()
    for _ in range(4):
        breaker.record_failure()
    clock.now += 5.0
    assert breaker.allow()
    breaker.record_failure()
    assert _state(breaker) is BreakerState.OPEN
    assert breaker.retry_after_s() == pytest.approx(5.0)


def test_a_probe_that_says_nothing_hands_its_slot_back() -> None:
    breaker, clock, _ = _breaker()
    for _ in range(4):
        breaker.record_failure()
    clock.now += 5.0
    assert breaker.allow()
    breaker.record_neutral()  # e.g. the probe was a bad request (a 4xx): not the tier's fault
    assert _state(breaker) is BreakerState.HALF_OPEN and breaker.allow()


def test_never_opens_when_the_caller_forbids_it() -> None:
    breaker, _, seen = _breaker()
    for _ in range(50):
        breaker.record_failure(may_open=False)
    assert _state(breaker) is BreakerState.CLOSED and breaker.allow()
    assert seen == []


def test_a_failed_probe_on_the_last_tier_closes_rather_than_reopens() -> None:
    breaker, clock, _ = _breaker()
    for _ in range(4):
        breaker.record_failure()
    clock.now += 5.0
    assert breaker.allow()
    breaker.record_failure(may_open=False)
    assert _state(breaker) is BreakerState.CLOSED


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(failure_rate=0.0)
    with pytest.raises(ValueError):
        BreakerConfig(min_calls=0)
    with pytest.raises(ValueError):
        BreakerConfig(open_s=0.0)
