"""Faults at the tiers, seen from outside: retries, Retry-After, fallback before the first byte, the
mid-stream error event, and the per-tier circuit breaker. Real gateway and fake-tier processes on
loopback; faults are injected into the fakes while they run (`POST /fake/faults`)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.conftest import Stack, _stack
from tests.procs import free_port, gateway, running, tiergate_cmd, write_profile

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello!"}]
# Breakers that never open in the stacks that test retries and fallback alone.
NO_BREAKER = {"breaker_enabled": False}


def _root(url: str) -> str:
    return url.removesuffix("/v1")


def _faults(stack: Stack, tier: str, **faults: Any) -> None:
    resp = httpx.post(_root(stack.fakes[tier]) + "/fake/faults", json=faults)
    assert resp.status_code == 200, resp.text


def _stats(stack: Stack, tier: str) -> dict[str, int]:
    stats: dict[str, int] = httpx.get(_root(stack.fakes[tier]) + "/fake/stats").json()
    return stats


def _metric(stack: Stack, name: str, **labels: str) -> float:
    """A sample's value from /metrics (0 when the series does not exist yet)."""
    text = httpx.get(_root(stack.base_url) + "/metrics").text
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match.group(1))) == labels:
            return float(match.group(2))
    return 0.0


def _readyz(stack: Stack) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(_root(stack.base_url) + "/readyz").json()
    return body


def _post(stack: Stack, body: dict[str, Any]) -> httpx.Response:
    # The batch class's budget fits every fake tier, so model=auto starts at small however the latency
    # estimates have moved (under a tight budget the tier that answered fastest lately would start).
    headers = {"x-tiergate-latency-class": "batch"}
    return httpx.post(stack.base_url + "/chat/completions", json=body, headers=headers, timeout=30.0)


def _events(resp: httpx.Response) -> list[bytes]:
    return [line[5:].strip() for line in resp.content.split(b"\n") if line.startswith(b"data:")]


@pytest.fixture(scope="module")
def flaky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Three healthy fakes, one per tier, into which each test injects its fault; breakers off."""
    fakes: dict[str, tuple[str, ...]] = {"small": ("--seed", "1"), "medium": ("--seed", "2"), "large": ("--seed", "3")}
    settings = {
        "request_timeout_s": 5.0,
        "resilience": {**NO_BREAKER, "max_retries": 2, "retry_base_delay_ms": 20, "retry_max_delay_ms": 100},
    }
    yield from _stack(tmp_path_factory, fakes, settings)


@pytest.fixture(autouse=True)
def _no_leftover_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "flaky" in request.fixturenames:
        stack: Stack = request.getfixturevalue("flaky")
        for tier in stack.fakes:
            _faults(stack, tier)


def test_a_503_is_retried_and_the_caller_gets_the_answer(flaky: Stack) -> None:
    before = _stats(flaky, "small")
    retries = _metric(flaky, "tiergate_retries_total", reason="status_5xx", tier="small")
    _faults(flaky, "small", fail_next=1, status=503)
    reply = flaky.client().chat.completions.create(model="small", messages=HELLO)
    assert reply.choices[0].message.content
    after = _stats(flaky, "small")
    assert after["requests"] - before["requests"] == 2 and after["failed"] - before["failed"] == 1
    assert _metric(flaky, "tiergate_retries_total", reason="status_5xx", tier="small") == retries + 1


def test_retry_after_is_honoured(flaky: Stack) -> None:
    _faults(flaky, "small", fail_next=1, status=429, retry_after="1")
    start = time.monotonic()
    reply = flaky.client().chat.completions.create(model="small", messages=HELLO)
    waited = time.monotonic() - start
    assert reply.choices[0].message.content
    # The backoff alone would have waited at most 20 ms; the tier asked for a second.
    assert 1.0 <= waited < 4.5


def test_retry_after_past_the_deadline_ends_the_retries_at_once(flaky: Stack) -> None:
    before = _stats(flaky, "small")
    _faults(flaky, "small", fail_next=1, status=503, retry_after="60")
    start = time.monotonic()
    resp = _post(flaky, {"model": "small", "messages": HELLO})
    assert resp.status_code == 502
    assert time.monotonic() - start < 1.0  # request_timeout_s is 5: waiting 60 s could never fit
    assert _stats(flaky, "small")["requests"] - before["requests"] == 1


def test_a_bad_request_is_never_retried_nor_counted_against_the_tier(flaky: Stack) -> None:
    before = _stats(flaky, "small")
    errors = _metric(flaky, "tiergate_upstream_errors_total", kind="invalid_request_error", tier="small")
    _faults(flaky, "small", fail_next=2, status=400)
    with pytest.raises(openai.BadRequestError):
        flaky.client().chat.completions.create(model="small", messages=HELLO)
    assert _stats(flaky, "small")["requests"] - before["requests"] == 1
    assert _metric(flaky, "tiergate_upstream_errors_total", kind="invalid_request_error", tier="small") == errors


@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_tier_falls_back_to_the_next_before_the_first_byte(flaky: Stack, stream: bool) -> None:
    fallbacks = _metric(flaky, "tiergate_fallbacks_total", from_tier="small", to_tier="medium")
    _faults(flaky, "small", fail_next=3, status=500)  # the first try and both retries
    resp = _post(flaky, {"model": "auto", "messages": HELLO, "stream": stream})
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-tier"] == "medium"
    assert resp.headers["x-tiergate-tiers-tried"] == "small,medium"
    if stream:
        events = _events(resp)
        assert events[-1] == b"[DONE]" and not any(b'"error"' in e for e in events)
        assert all(orjson.loads(e)["model"] == "medium" for e in events[:-1])
    else:
        assert resp.json()["model"] == "medium"
    assert _metric(flaky, "tiergate_fallbacks_total", from_tier="small", to_tier="medium") == fallbacks + 1


def test_a_pinned_tier_does_not_fall_back(flaky: Stack) -> None:
    _faults(flaky, "small", fail_next=3, status=500)
    resp = _post(flaky, {"model": "small", "messages": HELLO})
    assert resp.status_code == 502 and resp.json()["error"]["type"] == "upstream_error"


def test_a_stream_cut_before_its_first_event_is_retried_cleanly(flaky: Stack) -> None:
    _faults(flaky, "small", break_next=1, break_after_chunks=0)
    resp = _post(flaky, {"model": "small", "messages": HELLO, "stream": True})
    events = _events(resp)
    assert resp.status_code == 200 and events[-1] == b"[DONE]"
    assert not any(b'"error"' in e for e in events)
    assert _metric(flaky, "tiergate_retries_total", reason="broken", tier="small") >= 1


def test_a_tier_failing_mid_stream_ends_it_with_an_error_event_then_done(flaky: Stack) -> None:
    _faults(flaky, "small", break_next=1, break_after_chunks=3)
    resp = _post(flaky, {"model": "auto", "messages": HELLO, "stream": True})
    assert resp.status_code == 200  # the headers went out with the first event
    events = _events(resp)
    assert events[-1] == b"[DONE]"
    error = orjson.loads(events[-2])
    assert set(error) == {"error"} and error["error"]["type"] == "upstream_error"
    content = [orjson.loads(e) for e in events[:-2]]
    assert len(content) == 3 and all(c["model"] == "small" for c in content)  # no tier switch after bytes
    # The official SDK raises on the error event instead of returning a truncated answer as whole.
    _faults(flaky, "small", break_next=1, break_after_chunks=3)
    with pytest.raises(openai.APIError):
        for _ in flaky.client().chat.completions.create(model="small", messages=HELLO, stream=True):
            pass


@pytest.fixture
def killable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, dict[str, Any]]]:
    """One fake process per tier, which the test may stop (its port then refuses connections)."""
    with ExitStack() as stack:
        procs: dict[str, Any] = {}
        fakes: dict[str, str] = {}
        for tier in ("small", "medium", "large"):
            port = free_port()
            cmd = tiergate_cmd("fake-upstream", "--port", str(port))
            procs[tier] = stack.enter_context(running(cmd, f"http://127.0.0.1:{port}/health"))
            fakes[tier] = f"http://127.0.0.1:{port}/v1"
        path = Path(tmp_path_factory.mktemp("killable")) / "profile.yaml"
        write_profile(path, "test-fake", endpoints=fakes, gateway={"resilience": NO_BREAKER})
        served = Stack(stack.enter_context(gateway(path)), fakes)
        try:
            yield served, procs
        finally:
            served.close()


def test_a_tier_that_refuses_connections_falls_back_for_plain_and_streamed_requests(
    killable: tuple[Stack, dict[str, Any]],
) -> None:
    stack, procs = killable
    assert _post(stack, {"model": "auto", "messages": HELLO}).headers["x-tiergate-tier"] == "small"
    procs["small"].stop()
    plain = _post(stack, {"model": "auto", "messages": HELLO})
    streamed = _post(stack, {"model": "auto", "messages": HELLO, "stream": True})
    assert plain.status_code == 200 and plain.json()["model"] == "medium"
    assert streamed.status_code == 200 and _events(streamed)[-1] == b"[DONE]"
    assert streamed.headers["x-tiergate-tier"] == "medium"
    # Unless the health probe saw small go down between the two (routing then skips it at once),
    # each request tried small, retried the refused connection, and fell back.
    assert _metric(stack, "tiergate_retries_total", reason="connect", tier="small") >= 1
    assert _metric(stack, "tiergate_fallbacks_total", from_tier="small", to_tier="medium") >= 1


BREAKER = {
    "max_retries": 0,
    "breaker_min_calls": 4,
    "breaker_failure_rate": 0.5,
    "breaker_window_s": 60,
    "breaker_open_s": 3.0,  # long enough that a slow machine checks the open state before it ends
}


@pytest.fixture
def breaking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    fakes: dict[str, tuple[str, ...]] = {"small": ("--seed", "1"), "medium": ("--seed", "2"), "large": ("--seed", "3")}
    yield from _stack(tmp_path_factory, fakes, {"resilience": BREAKER})


def test_the_breaker_opens_after_failures_and_a_half_open_probe_closes_it(breaking: Stack) -> None:
    _faults(breaking, "small", fail_next=1000, status=500)
    for _ in range(4):
        assert _post(breaking, {"model": "auto", "messages": HELLO}).json()["model"] == "medium"
    assert _readyz(breaking)["tiers"]["small"]["breaker"] == "open"
    assert _metric(breaking, "tiergate_breaker_state", tier="small") == 2
    # Open: routing skips small without calling it, and a request pinned to it is refused fast.
    calls = _stats(breaking, "small")["requests"]
    resp = _post(breaking, {"model": "auto", "messages": HELLO})
    assert resp.json()["model"] == "medium" and resp.headers["x-tiergate-tiers-tried"] == "medium"
    pinned = _post(breaking, {"model": "small", "messages": HELLO})
    assert pinned.status_code == 503 and pinned.json()["error"]["code"] == "tier_unavailable"
    assert int(pinned.headers["retry-after"]) >= 1
    assert _stats(breaking, "small")["requests"] == calls
    # The tier recovers; after the open time one probe goes through, succeeds and closes the breaker.
    _faults(breaking, "small")
    time.sleep(3.1)
    assert _readyz(breaking)["tiers"]["small"]["breaker"] == "half-open"
    assert _metric(breaking, "tiergate_breaker_state", tier="small") == 1
    assert _post(breaking, {"model": "auto", "messages": HELLO}).json()["model"] == "small"
    assert _readyz(breaking)["tiers"]["small"]["breaker"] == "closed"
    assert _metric(breaking, "tiergate_breaker_state", tier="small") == 0
    for state in ("open", "half-open", "closed"):
        assert _metric(breaking, "tiergate_breaker_transitions_total", state=state, tier="small") == 1


def test_a_failed_probe_opens_the_breaker_again(breaking: Stack) -> None:
    _faults(breaking, "small", fail_next=1000, status=500)
    for _ in range(4):
        _post(breaking, {"model": "auto", "messages": HELLO})
    time.sleep(3.1)
    calls = _stats(breaking, "small")["requests"]
    assert _post(breaking, {"model": "auto", "messages": HELLO}).json()["model"] == "medium"
    assert _stats(breaking, "small")["requests"] == calls + 1  # exactly one probe
    assert _readyz(breaking)["tiers"]["small"]["breaker"] == "open"


@pytest.fixture
def all_failing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One always-failing fake behind all three tiers."""
    fakes: dict[str, tuple[str, ...]] = {t: ("--failure-rate", "1") for t in ("small", "medium", "large")}
    yield from _stack(tmp_path_factory, fakes, {"resilience": {**BREAKER, "breaker_min_calls": 2}})


def test_the_last_healthy_tier_is_never_opened(all_failing: Stack) -> None:
    for _ in range(6):
        assert _post(all_failing, {"model": "auto", "messages": HELLO}).status_code == 502
    states = {name: tier["breaker"] for name, tier in _readyz(all_failing)["tiers"].items()}
    assert sorted(states.values()) == ["closed", "open", "open"], states
    # The tier left closed still takes requests: callers get the tier's 502, never a 503 from the gateway.
    last = next(name for name, state in states.items() if state == "closed")
    calls = _stats(all_failing, last)["requests"]
    assert _post(all_failing, {"model": last, "messages": HELLO}).status_code == 502
    assert _stats(all_failing, last)["requests"] == calls + 1
    assert httpx.get(_root(all_failing.base_url) + "/readyz").status_code == 200
