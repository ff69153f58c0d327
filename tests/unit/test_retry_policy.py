"""The retry policy: backoff grows and is capped, jitter stays in its bounds, the deadline and
Retry-After decide whether a retry happens at all."""

from __future__ import annotations

import random

import pytest

from router.runtime.retry import RetryPolicy


def test_backoff_doubles_from_the_base_and_stops_at_the_cap() -> None:
    policy = RetryPolicy(max_retries=10, base_delay_s=0.1, max_delay_s=1.0)
    caps = [policy.backoff_cap_s(i) for i in range(6)]
    assert caps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


@pytest.mark.parametrize("retry", [0, 1, 2, 5])
def test_jittered_backoff_stays_between_half_the_cap_and_the_cap(retry: int) -> None:
    policy = RetryPolicy(max_retries=10, base_delay_s=0.05, max_delay_s=2.0)
    rng = random.Random(7)
    cap = policy.backoff_cap_s(retry)
    waits = [policy.backoff_s(retry, rng) for _ in range(2000)]
    assert all(cap / 2 <= w <= cap for w in waits)
    # Jitter really spreads the waits (callers that failed together do not retry together).
    assert max(waits) - min(waits) > cap * 0.4


def test_no_retry_once_the_retries_are_spent() -> None:
    policy = RetryPolicy(max_retries=2)
    rng = random.Random(1)
    assert policy.delay_s(0, remaining_s=10, retry_after_s=None, rng=rng) is not None
    assert policy.delay_s(1, remaining_s=10, retry_after_s=None, rng=rng) is not None
    assert policy.delay_s(2, remaining_s=10, retry_after_s=None, rng=rng) is None


def test_zero_retries_turns_retrying_off() -> None:
    assert RetryPolicy(max_retries=0).delay_s(0, remaining_s=10, retry_after_s=None, rng=random.Random()) is None


def test_a_wait_that_would_use_up_the_deadline_is_not_taken() -> None:
    policy = RetryPolicy(max_retries=5, base_delay_s=1.0, max_delay_s=1.0)
    rng = random.Random(3)
    assert policy.delay_s(0, remaining_s=0.4, retry_after_s=None, rng=rng) is None  # the wait is >= 0.5
    assert policy.delay_s(0, remaining_s=0.0, retry_after_s=None, rng=rng) is None
    assert policy.delay_s(0, remaining_s=5.0, retry_after_s=None, rng=rng) is not None


def test_retry_after_replaces_the_backoff() -> None:
    policy = RetryPolicy(max_retries=3, base_delay_s=0.05, max_delay_s=0.1)
    assert policy.delay_s(0, remaining_s=10, retry_after_s=1.5, rng=random.Random()) == 1.5
    assert policy.delay_s(0, remaining_s=10, retry_after_s=0.0, rng=random.Random()) == 0.0


def test_retry_after_past_the_deadline_means_no_retry() -> None:
    policy = RetryPolicy(max_retries=3)
    assert policy.delay_s(0, remaining_s=2.0, retry_after_s=5.0, rng=random.Random()) is None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay_s=1.0, max_delay_s=0.5)
    with pytest.raises(ValueError):
        RetryPolicy(multiplier=0.5)
