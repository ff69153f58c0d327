"""The limiter's arithmetic, on clocks the test sets (gateway.quota is pure)."""

from __future__ import annotations

import pytest

from deployments.profile import GatewaySpec, ProfileError
from gateway.access import build_quotas, check_worker_shares
from gateway.quota import KeyQuota, SpendWindow, TokenBucket


def test_a_bucket_of_n_a_minute_allows_a_burst_of_n_then_one_every_60_over_n_seconds() -> None:
    bucket = TokenBucket.per_minute(3, now=0.0)
    for _ in range(3):
        assert bucket.wait_s(0.0, 1.0) == 0.0
        bucket.take(1.0, 0.0)
    assert bucket.wait_s(0.0, 1.0) == pytest.approx(20.0)
    assert bucket.wait_s(15.0, 1.0) == pytest.approx(5.0)
    assert bucket.wait_s(20.0, 1.0) == 0.0


def test_a_bucket_never_holds_more_than_its_capacity() -> None:
    bucket = TokenBucket.per_minute(3, now=0.0)
    bucket.take(3.0, 0.0)
    assert bucket.wait_s(3600.0, 3.0) == 0.0
    assert bucket.wait_s(3600.0, 4.0) == pytest.approx(20.0)


def test_an_overdrawn_bucket_waits_until_it_is_above_zero() -> None:
    bucket = TokenBucket.per_minute(60, now=0.0)  # one token a second
    assert bucket.wait_until_positive_s(0.0) == 0.0
    bucket.take(90.0, 0.0)  # a request that used more than the whole minute
    assert bucket.wait_until_positive_s(0.0) == pytest.approx(30.0, abs=0.01)
    assert bucket.wait_until_positive_s(29.0) == pytest.approx(1.0, abs=0.01)
    assert bucket.wait_until_positive_s(30.5) == 0.0


def test_spend_windows_align_to_the_epoch_and_reset_in_the_next_one() -> None:
    window = SpendWindow(budget_usd=1.0, period_s=86400)
    day = 20_000 * 86400.0
    assert window.wait_s(day + 100.0) == 0.0
    window.charge(1.5, day + 100.0)  # the last request may overshoot
    assert window.remaining_usd(day + 200.0) == 0.0
    assert window.wait_s(day + 86000.0) == pytest.approx(400.0)
    assert window.remaining_usd(day + 86400.0) == 1.0


def test_a_key_is_refused_by_the_limit_that_binds_longest_and_nothing_is_taken() -> None:
    team = SpendWindow(budget_usd=1.0, period_s=3600)
    quota = KeyQuota(now=0.0, requests_per_minute=2, team=team, team_name="research")
    assert quota.admit(0.0, 0.0) is None
    quota.settle(tokens=10, cost_usd=2.0, now=0.0, wall=0.0)
    refusal = quota.admit(1.0, 10.0)
    assert refusal is not None
    assert refusal.limit == "spend"
    assert refusal.retry_after_s == pytest.approx(3590.0)
    assert "research" in refusal.message
    # The refused request took no request token: the bucket still holds one.
    assert quota.requests is not None and quota.requests.wait_s(1.0, 1.0) == 0.0


def test_requests_and_tokens_limits_refuse_with_their_own_names() -> None:
    rpm = KeyQuota(now=0.0, requests_per_minute=1)
    assert rpm.admit(0.0, 0.0) is None
    refused = rpm.admit(0.0, 0.0)
    assert refused is not None and refused.limit == "requests"
    tpm = KeyQuota(now=0.0, tokens_per_minute=10)
    assert tpm.admit(0.0, 0.0) is None
    tpm.settle(tokens=40, cost_usd=0.0, now=0.0, wall=0.0)
    refused = tpm.admit(0.0, 0.0)
    assert refused is not None and refused.limit == "tokens"
    assert refused.retry_after_s == pytest.approx(180.0, abs=0.01)  # 30 tokens of debt at 10 a minute


def test_a_keys_budget_left_is_the_lesser_of_its_own_and_its_teams() -> None:
    team = SpendWindow(budget_usd=5.0, period_s=3600)
    quota = KeyQuota(now=0.0, budget=SpendWindow(budget_usd=2.0, period_s=3600), team=team, team_name="t")
    assert quota.remaining_usd(0.0) == 2.0
    team.charge(4.0, 0.0)
    assert quota.remaining_usd(0.0) == 1.0
    assert KeyQuota(now=0.0, requests_per_minute=5).remaining_usd(0.0) is None


def _gateway(**data: object) -> GatewaySpec:
    return GatewaySpec.model_validate({"api_keys": ["plain-key-0001"], **data})


def test_each_of_n_workers_enforces_one_nth_of_every_limit() -> None:
    gw = _gateway(
        key_limits={"requests_per_minute": 60, "budget_usd": 3.0},
        keys=[{"key": "team-key-0002", "team": "t", "tokens_per_minute": 600}],
        teams={"t": {"budget_usd": 9.0}},
    )
    quotas = list(build_quotas(gw, workers=3, now=0.0).values())
    assert len(quotas) == 2
    plain, member = quotas
    assert plain.requests is not None and plain.requests.capacity == pytest.approx(20.0)
    assert plain.remaining_usd(0.0) == pytest.approx(1.0)
    assert member.tokens is not None and member.tokens.capacity == pytest.approx(200.0)
    # The member's own budget falls back to key_limits; its team's is shared and split too.
    assert member.requests is not None and member.requests.capacity == pytest.approx(20.0)
    assert member.team is not None and member.team.budget_usd == pytest.approx(3.0)


def test_keys_without_any_limit_are_not_tracked() -> None:
    assert build_quotas(_gateway(), workers=1, now=0.0) == {}


def test_a_limit_too_small_to_split_between_workers_is_refused_naming_the_field() -> None:
    gw = _gateway(keys=[{"key": "key-limited-0003", "requests_per_minute": 3}])
    check_worker_shares(gw, 3)
    with pytest.raises(ProfileError, match=r"requests_per_minute is 3, below the 4 gateway processes"):
        check_worker_shares(gw, 4)


def test_gateway_replicas_split_every_limit_as_workers_do() -> None:
    # Two pods of two workers: four processes, each holding a quarter, so together they hold the key.
    gw = _gateway(replicas=2, key_limits={"requests_per_minute": 60, "budget_usd": 4.0})
    (quota,) = build_quotas(gw, workers=2, now=0.0).values()
    assert quota.requests is not None and quota.requests.capacity == pytest.approx(15.0)
    assert quota.remaining_usd(0.0) == pytest.approx(1.0)
    with pytest.raises(ProfileError, match="below the 80 gateway processes"):
        check_worker_shares(_gateway(replicas=40, key_limits={"requests_per_minute": 60}), 2)
