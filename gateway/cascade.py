"""Running the cascade live: ask a tier, judge its answer, maybe ask the next one.

The rules (when to escalate, when to stop) are router.runtime.cascade's; this module does the
calls and the bookkeeping: every attempt's tokens and cost, the time spent, and the answer
returned. Tier calls go through `call`, so the service keeps ownership of the upstream client,
the admission lease and the caller's disconnect.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.errors import HTTPError, TierUnavailable
from router.runtime.cascade import AnswerJudge, Attempt, best_attempt, next_step
from router.runtime.slo import Budget, Estimate


@dataclass(frozen=True, slots=True)
class TierAnswer:
    """One tier's parsed, non-streamed answer and what it cost."""

    tier: str
    data: dict[str, Any]
    text: str
    logprobs: list[float] | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    elapsed_ms: float


@dataclass
class CascadeOutcome:
    """What the caller gets and what the headers and metrics say about how it was made.

    `answer` is None when the cascade climbed to the last tier of the ladder for a streamed request:
    nothing is left to judge, so the caller gets that tier's live stream (`stream_tier`).
    """

    answer: TierAnswer | None
    answers: list[TierAnswer]
    escalations: list[tuple[str, str, str]] = field(default_factory=list)  # (from, to, reason)
    stop_reason: str = "accepted"
    stream_tier: str | None = None
    # (from, to): a tier that failed after its retries, and the tier asked in its place.
    fallbacks: list[tuple[str, str]] = field(default_factory=list)
    # With `stream_tier`: the answer to send instead should that tier fail before its first byte.
    best_so_far: TierAnswer | None = None

    @property
    def tiers_tried(self) -> list[str]:
        return [a.tier for a in self.answers]

    @property
    def cost_usd(self) -> float:
        return sum(a.cost_usd for a in self.answers)


def answer_text(data: dict[str, Any]) -> str:
    """The first choice's message content ('' when absent, e.g. a tool call)."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def answer_logprobs(data: dict[str, Any]) -> list[float] | None:
    """Per-token logprobs of the first choice in OpenAI's shape, or None when the tier gave none."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    lp = choices[0].get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list):
        return None
    values = [float(t["logprob"]) for t in content if isinstance(t, dict) and isinstance(t.get("logprob"), int | float)]
    return values or None


def strip_logprobs(data: dict[str, Any]) -> None:
    """Drop the logprobs the gateway asked for on the caller's behalf (they asked for none)."""
    for choice in data.get("choices") or []:
        if isinstance(choice, dict):
            choice.pop("logprobs", None)


async def run_cascade(
    prompt: str,
    ladder: Sequence[str],
    call: Callable[[str], Awaitable[TierAnswer]],
    judge: AnswerJudge,
    *,
    max_escalations: int,
    budget: Budget | None,
    estimate: Callable[[str], Estimate],
    started: float,
    clock: Callable[[], float] = time.perf_counter,
    stream_last: bool = False,
) -> CascadeOutcome:
    """Ask `ladder[0]`, then climb while the judge doubts the answer and the budget allows.

    `started` is the request's start on `clock` (seconds): the time already spent counts against
    the budget when deciding whether the next tier still fits. With `stream_last`, a climb to the
    last tier is not called here: its answer would be accepted unjudged, so the caller streams it.

    A tier that fails (after the retries `call` makes) or whose breaker refuses is replaced by the
    next one up (a fallback, not an escalation); at the top, the best answer so far is returned
    ("tier-failed"), and with no answer at all the failure is the caller's.
    """
    answers: list[TierAnswer] = []
    attempts: list[Attempt] = []
    escalations: list[tuple[str, str, str]] = []
    fallbacks: list[tuple[str, str]] = []
    tier = ladder[0]
    while True:
        position = ladder.index(tier)
        nxt = ladder[position + 1] if position + 1 < len(ladder) else None
        if stream_last and answers and nxt is None:
            best = answers[best_attempt(attempts)]
            return CascadeOutcome(None, answers, escalations, "streamed-top", tier, fallbacks, best)
        try:
            answer = await call(tier)
        except HTTPError as err:
            if not (err.counts_as_tier_failure or isinstance(err, TierUnavailable)):
                raise
            if nxt is not None:
                fallbacks.append((tier, nxt))
                tier = nxt
                continue
            if not answers:
                raise
            return CascadeOutcome(answers[best_attempt(attempts)], answers, escalations, "tier-failed", None, fallbacks)
        answers.append(answer)
        judgement = (
            None
            if nxt is None
            else judge.judge(tier, prompt, answer.text, answer.logprobs, [a.text for a in answers[:-1]])
        )
        attempts.append(Attempt(tier, judgement))
        spent_ms = (clock() - started) * 1e3
        step = next_step(
            ladder,
            attempts,
            max_escalations=max_escalations,
            budget=budget,
            spent_ms=spent_ms,
            next_estimate=estimate(nxt) if nxt is not None else None,
        )
        if step.action == "escalate" and step.next_tier is not None:
            escalations.append((tier, step.next_tier, step.reason))
            tier = step.next_tier
            continue
        chosen = len(answers) - 1 if step.action == "accept" else best_attempt(attempts)
        return CascadeOutcome(answers[chosen], answers, escalations, step.reason, fallbacks=fallbacks)


def sse_from_completion(data: dict[str, Any], *, wants_usage: bool) -> bytes:
    """A finished answer as the SSE stream a tier would have sent (buffer mode's reply).

    One content chunk, a finish chunk, the usage chunk when asked for, then [DONE]: the official
    SDK assembles the same message it would from a live stream.
    """
    base: dict[str, Any] = {k: data[k] for k in ("id", "created", "model", "system_fingerprint") if k in data}
    base["object"] = "chat.completion.chunk"
    events: list[dict[str, Any]] = []
    for index, choice in enumerate(data.get("choices") or []):
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        delta = {k: v for k, v in message.items() if v is not None} if isinstance(message, dict) else {}
        first: dict[str, Any] = {"index": choice.get("index", index), "delta": delta, "finish_reason": None}
        if "logprobs" in choice:
            first["logprobs"] = choice["logprobs"]
        events.append({**base, "choices": [first]})
        done = {"index": choice.get("index", index), "delta": {}, "finish_reason": choice.get("finish_reason")}
        events.append({**base, "choices": [done]})
    if wants_usage and isinstance(data.get("usage"), dict):
        events.append({**base, "choices": [], "usage": data["usage"]})
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
