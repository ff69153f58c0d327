"""One tier call under faults: which faults are retried, how long the waits are, the deadline, and
what the tier's circuit breaker learns. Real registry, metrics and policy; a test clock; the tier
call is a function that fails as told."""

from __future__ import annotations

import email.utils
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest

from deployments.profile import ResilienceSpec, load_profile
from gateway.context import RequestContext
from gateway.errors import HTTPError, TierUnavailable, UpstreamFailed, UpstreamRejected, UpstreamTimeout
from gateway.metrics import GatewayMetrics
from gateway.resilience import Resilience
from gateway.streaming import relay
from gateway.tiers import TierRegistry, breaker_config
from gateway.upstream import retry_after_seconds
from router.runtime.breaker import BreakerState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _setup(**spec: object) -> tuple[Resilience, TierRegistry, Clock]:
    profile = load_profile("test-fake", apply_env=False)
    resilience = ResilienceSpec.model_validate(spec)
    clock = Clock()
    metrics = GatewayMetrics([t.name for t in profile.tiers], router_version="t", policy="rule")
    tiers = TierRegistry(profile.tiers, metrics, breaker_config(resilience), clock=clock)
    return Resilience(resilience, tiers, metrics, rng=random.Random(5), sleep=clock.sleep, clock=clock), tiers, clock


def _failing(errors: list[HTTPError], timeouts: list[float] | None = None) -> Callable[[float], Awaitable[str]]:
    async def op(timeout_s: float) -> str:
        if timeouts is not None:
            timeouts.append(timeout_s)
        if errors:
            raise errors.pop(0)
        return "answer"

    return op


async def test_retryable_faults_are_retried_with_growing_jittered_waits() -> None:
    resilience, _, clock = _setup(retry_base_delay_ms=100, retry_max_delay_ms=1000, max_retries=3)
    faults: list[HTTPError] = [UpstreamFailed("x", fault=f) for f in ("connect", "status_5xx", "status_429")]
    assert await resilience.call("small", _failing(faults), deadline=clock.now + 30) == "answer"
    assert len(clock.slept) == 3
    for i, wait in enumerate(clock.slept):
        cap = 0.1 * 2**i
        assert cap / 2 <= wait <= cap


async def test_retries_stop_when_spent() -> None:
    resilience, _, clock = _setup(max_retries=2)
    faults: list[HTTPError] = [UpstreamTimeout("t") for _ in range(5)]
    with pytest.raises(UpstreamTimeout):
        await resilience.call("small", _failing(faults), deadline=clock.now + 30)
    assert len(clock.slept) == 2 and len(faults) == 2  # three tries made


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
async def test_bad_requests_are_never_retried_nor_counted(status: int) -> None:
    resilience, tiers, clock = _setup()
    with pytest.raises(UpstreamRejected):
        await resilience.call("small", _failing([UpstreamRejected(status, "no")]), deadline=clock.now + 30)
    assert clock.slept == []
    breaker = tiers.by_name["small"].breaker
    assert breaker is not None and breaker.counts() == (0, 0)


async def test_a_tier_that_does_not_serve_the_model_is_not_asked_again() -> None:
    resilience, _, clock = _setup()
    with pytest.raises(UpstreamFailed):
        await resilience.call("small", _failing([UpstreamFailed("x", fault="misconfigured")]), deadline=clock.now + 30)
    assert clock.slept == []


async def test_retry_after_is_waited_for_when_it_fits_and_ends_the_retries_when_it_does_not() -> None:
    resilience, _, clock = _setup()
    ok: list[HTTPError] = [UpstreamFailed("busy", fault="status_429", retry_after_s=2.0)]
    assert await resilience.call("small", _failing(ok), deadline=clock.now + 5) == "answer"
    assert clock.slept == [2.0]
    late: list[HTTPError] = [UpstreamFailed("busy", fault="status_429", retry_after_s=10.0)]
    with pytest.raises(UpstreamFailed):
        await resilience.call("small", _failing(late), deadline=clock.now + 5)
    assert clock.slept == [2.0]


async def test_each_try_gets_at_most_its_bound_and_what_is_left_of_the_deadline() -> None:
    resilience, _, clock = _setup(try_timeout_s=3.0, retry_base_delay_ms=500, retry_max_delay_ms=500)
    seen: list[float] = []

    async def hangs(timeout_s: float) -> str:
        seen.append(timeout_s)
        clock.now += timeout_s  # a tier that never answers uses the whole try
        raise UpstreamTimeout("t")

    start = clock.now
    with pytest.raises(UpstreamTimeout):
        await resilience.call("small", hangs, deadline=start + 5)
    assert seen[0] == 3.0 and len(seen) == 2 and seen[1] < 2.0  # the second try gets only what is left
    assert clock.now - start <= 5.0 + 1e-9  # never past the deadline
    with pytest.raises(UpstreamTimeout):
        await resilience.call("small", _failing([]), deadline=clock.now - 0.1)


async def test_every_try_feeds_the_breaker_which_then_refuses_calls() -> None:
    resilience, tiers, clock = _setup(max_retries=0, breaker_min_calls=3, breaker_open_s=5)
    for _ in range(3):
        with pytest.raises(UpstreamFailed):
            await resilience.call("small", _failing([UpstreamFailed("x", fault="status_5xx")]), deadline=clock.now + 30)
    assert tiers.breaker_state("small") is BreakerState.OPEN
    assert "small" in tiers.unavailable()
    with pytest.raises(TierUnavailable) as info:
        await resilience.call("small", _failing([]), deadline=clock.now + 30)
    assert info.value.headers["retry-after"] == "5"


async def test_the_last_usable_tier_is_never_opened_and_stays_callable() -> None:
    resilience, tiers, clock = _setup(max_retries=0, breaker_min_calls=2)
    for _ in range(5):
        for name in tiers.names:
            with pytest.raises(HTTPError):
                await resilience.call(name, _failing([UpstreamFailed("x", fault="connect")]), deadline=clock.now + 30)
    states = [tiers.breaker_state(n) for n in tiers.names]
    assert states.count(BreakerState.OPEN) == 2 and states.count(BreakerState.CLOSED) == 1
    # Routing keeps a tier to send to, and /readyz stays true while that tier's probe is good.
    assert len(tiers.unavailable()) == 2


async def test_breakers_off_means_no_refusals() -> None:
    resilience, tiers, clock = _setup(max_retries=0, breaker_enabled=False)
    for _ in range(30):
        with pytest.raises(UpstreamFailed):
            await resilience.call("small", _failing([UpstreamFailed("x", fault="status_5xx")]), deadline=clock.now + 30)
    assert tiers.unavailable() == frozenset() and tiers.allow("small")


class _Stream:
    """The UpstreamStream interface relay() reads: batches of SSE payloads."""

    def __init__(self, batches: list[list[bytes]], error: HTTPError | None = None) -> None:
        self._batches, self._error = batches, error

    async def batches(self) -> AsyncIterator[list[bytes]]:
        for batch in self._batches:
            yield batch
        if self._error is not None:
            raise self._error


CHUNK = b'{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}'


async def _relayed(stream: _Stream) -> tuple[list[bytes], list[str]]:
    faults: list[str] = []
    ctx = RequestContext(request_id="r", t0=0.0)
    out = [
        chunk
        async for chunk in relay(ctx, stream, "small", False, on_fault=lambda: faults.append("small"))  # type: ignore[arg-type]
    ]
    events = [line[6:] for line in b"".join(out).split(b"\n\n") if line.startswith(b"data: ")]
    return events, faults


@pytest.mark.parametrize(
    "stream",
    [_Stream([[CHUNK]], UpstreamFailed("The tier's stream broke off.", fault="broken")), _Stream([[CHUNK], [CHUNK]])],
    ids=["connection-broken", "ended-without-done"],
)
async def test_a_stream_failing_mid_way_ends_with_an_error_event_then_done(stream: _Stream) -> None:
    events, faults = await _relayed(stream)
    assert events[-1] == b"[DONE]"
    error = orjson.loads(events[-2])
    assert set(error) == {"error"} and error["error"]["type"] == "upstream_error"
    assert faults == ["small"]  # the tier's breaker hears of it


async def test_a_finished_stream_is_relayed_untouched() -> None:
    events, faults = await _relayed(_Stream([[CHUNK], [b"[DONE]"]]))
    assert events[-1] == b"[DONE]" and len(events) == 2 and faults == []


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), ("0.5", 0.5), (" 7 ", 7.0), ("-4", 0.0), (None, None), ("", None), ("soon", None)],
)
def test_retry_after_in_seconds(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header) == seconds


def test_retry_after_as_an_http_date() -> None:
    now = 1_800_000_000.0
    assert retry_after_seconds(email.utils.formatdate(now + 30, usegmt=True), now_s=now) == pytest.approx(30.0)
    assert retry_after_seconds(email.utils.formatdate(now - 30, usegmt=True), now_s=now) == 0.0
