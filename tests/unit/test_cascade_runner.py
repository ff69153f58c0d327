"""The cascade runner: calls, judgements, budget and cost bookkeeping across attempts."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gateway.cascade import TierAnswer, answer_logprobs, answer_text, run_cascade, strip_logprobs
from gateway.errors import HTTPError, UpstreamFailed, UpstreamRejected
from router.runtime.cascade import Judgement
from router.runtime.slo import Budget, Estimate

LADDER = ("small", "mid", "large")


class _Judge:
    def __init__(self, doubt: dict[str, bool]) -> None:
        self.doubt = doubt
        self.seen: list[tuple[str, list[str]]] = []

    def judge(
        self, tier: str, prompt: str, answer: str, logprobs: Sequence[float] | None, previous_answers: Sequence[str]
    ) -> Judgement:
        self.seen.append((tier, list(previous_answers)))
        d = self.doubt.get(tier, False)
        return Judgement(d, 0.9 if d else 0.1, "verifier-doubts-answer" if d else "accepted")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _caller(clock: _Clock, cost: float = 0.01, took_s: float = 0.1):  # type: ignore[no-untyped-def]
    calls: list[str] = []

    async def call(tier: str) -> TierAnswer:
        calls.append(tier)
        clock.now += took_s
        data = {"choices": [{"message": {"content": f"answer of {tier}"}}]}
        return TierAnswer(tier, data, f"answer of {tier}", None, 10, 5, cost, took_s * 1e3)

    return call, calls


async def test_doubtful_answers_climb_and_costs_add_up() -> None:
    clock = _Clock()
    call, calls = _caller(clock)
    judge = _Judge({"small": True, "mid": True})
    out = await run_cascade(
        "q",
        LADDER,
        call,
        judge,
        max_escalations=2,
        budget=None,
        estimate=lambda t: Estimate(1, 1),
        started=0.0,
        clock=clock,
    )
    assert calls == ["small", "mid", "large"] and out.answer is not None and out.answer.tier == "large"
    assert out.cost_usd == pytest.approx(0.03)
    assert [e[:2] for e in out.escalations] == [("small", "mid"), ("mid", "large")]
    # Later rungs see the earlier answers (agreement is the verifier's strongest signal).
    assert judge.seen == [("small", []), ("mid", ["answer of small"])]


async def test_a_confident_first_answer_costs_one_call() -> None:
    clock = _Clock()
    call, calls = _caller(clock)
    out = await run_cascade(
        "q",
        LADDER,
        call,
        _Judge({}),
        max_escalations=2,
        budget=None,
        estimate=lambda t: Estimate(1, 1),
        started=0.0,
        clock=clock,
    )
    assert calls == ["small"] and out.escalations == [] and out.stop_reason == "accepted"


async def test_spent_budget_returns_the_best_answer_so_far() -> None:
    clock = _Clock()
    call, calls = _caller(clock, took_s=0.9)
    out = await run_cascade(
        "q",
        LADDER,
        call,
        _Judge({"small": True}),
        max_escalations=2,
        budget=Budget(total_ms=1000),
        estimate=lambda t: Estimate(100, 500),
        started=0.0,
        clock=clock,
    )
    assert (
        calls == ["small"]
        and out.stop_reason == "budget-spent"
        and out.answer is not None
        and out.answer.tier == "small"
    )


def test_answer_parsing_and_logprob_stripping() -> None:
    data = {
        "choices": [{"message": {"content": "Paris"}, "logprobs": {"content": [{"logprob": -0.1}, {"logprob": -2}]}}]
    }
    assert answer_text(data) == "Paris" and answer_logprobs(data) == [-0.1, -2.0]
    strip_logprobs(data)
    assert "logprobs" not in data["choices"][0] and answer_logprobs(data) is None
    assert answer_text({"choices": []}) == ""


async def test_a_streamed_request_leaves_the_last_tier_to_be_streamed() -> None:
    clock = _Clock()
    call, calls = _caller(clock)
    out = await run_cascade(
        "q", LADDER, call, _Judge({"small": True, "mid": True}), max_escalations=2, budget=None,
        estimate=lambda t: Estimate(1, 1), started=0.0, clock=clock, stream_last=True,
    )  # fmt: skip
    assert calls == ["small", "mid"] and out.answer is None and out.stream_tier == "large"
    assert out.tiers_tried == ["small", "mid"] and out.cost_usd == pytest.approx(0.02)


def _failing_on(clock: _Clock, broken: set[str], error: HTTPError | None = None):  # type: ignore[no-untyped-def]
    call, calls = _caller(clock)

    async def maybe(tier: str) -> TierAnswer:
        if tier in broken:
            calls.append(tier)
            raise error or UpstreamFailed("The tier failed: boom", fault="status_5xx")
        answer: TierAnswer = await call(tier)
        return answer

    return maybe, calls


async def _run(call, judge: _Judge, clock: _Clock, *, stream_last: bool = False):  # type: ignore[no-untyped-def]
    estimate = lambda t: Estimate(1, 1)  # noqa: E731
    return await run_cascade(
        "q", LADDER, call, judge, max_escalations=2, budget=None, estimate=estimate, started=0.0, clock=clock,
        stream_last=stream_last,
    )  # fmt: skip


async def test_a_failed_tier_falls_back_to_the_next_without_counting_an_escalation() -> None:
    clock = _Clock()
    call, calls = _failing_on(clock, {"small"})
    out = await _run(call, _Judge({}), clock)
    assert calls == ["small", "mid"] and out.answer is not None and out.answer.tier == "mid"
    assert out.fallbacks == [("small", "mid")] and out.escalations == []
    assert out.tiers_tried == ["mid"]  # the failed tier gave no answer and costs nothing


async def test_a_failed_top_tier_returns_the_best_answer_so_far() -> None:
    clock = _Clock()
    call, _ = _failing_on(clock, {"large"})
    out = await _run(call, _Judge({"small": True, "mid": True}), clock)
    assert out.stop_reason == "tier-failed" and out.answer is not None and out.answer.tier in {"small", "mid"}


async def test_a_bad_request_is_not_a_fallback() -> None:
    clock = _Clock()
    call, calls = _failing_on(clock, {"small"}, UpstreamRejected(400, "no"))
    with pytest.raises(UpstreamRejected):
        await _run(call, _Judge({}), clock)
    assert calls == ["small"]


async def test_a_streamed_climb_keeps_the_best_answer_in_case_the_top_tier_fails() -> None:
    clock = _Clock()
    call, calls = _caller(clock)
    judge = _Judge({"small": True, "mid": True})
    out = await _run(call, judge, clock, stream_last=True)
    assert calls == ["small", "mid"] and out.stream_tier == "large" and out.answer is None
    assert out.best_so_far is not None and out.best_so_far.tier == "mid"  # equal doubt: the larger tier
