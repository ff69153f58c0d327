"""The live cascade's decisions: after a tier has answered, accept it or climb one rung.

The gateway runs the tier calls; this module says what to do between them, so the rules are
pure and tested without a network. A step escalates only when the verifier doubts the answer,
a larger tier is left on the ladder, fewer than `max_escalations` escalations happened, and the
remaining latency budget still fits the next tier's estimate. When it stops without accepting,
the caller gets the best answer so far: the one the verifier doubted least (an unverified
answer, from a rung with nothing above it, counts as certain).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from router.runtime.slo import Budget, Estimate


@dataclass(frozen=True, slots=True)
class Judgement:
    """A verifier's view of one answer: escalate or not, and how doubtful it is (0..1)."""

    escalate: bool
    p_not_good_enough: float
    reason: str


class AnswerJudge(Protocol):
    """Judges the answer of one tier of the ladder, given the answers of the tiers tried before."""

    def judge(
        self,
        tier: str,
        prompt: str,
        answer: str,
        logprobs: Sequence[float] | None,
        previous_answers: Sequence[str],
    ) -> Judgement: ...


@dataclass(frozen=True, slots=True)
class Attempt:
    """One tier's answer within a request."""

    tier: str
    judgement: Judgement | None  # None: not judged (the last tier of the ladder)


@dataclass(frozen=True, slots=True)
class Step:
    action: Literal["accept", "escalate", "stop"]
    reason: str
    next_tier: str | None = None


def next_step(
    ladder: Sequence[str],
    attempts: Sequence[Attempt],
    *,
    max_escalations: int,
    budget: Budget | None,
    spent_ms: float,
    next_estimate: Estimate | None,
) -> Step:
    """What to do after the last of `attempts` answered; `ladder` starts at the first tier tried."""
    last = attempts[-1]
    position = ladder.index(last.tier)
    if last.judgement is None:
        return Step("accept", "top-of-ladder")
    if not last.judgement.escalate:
        return Step("accept", last.judgement.reason)
    if position + 1 >= len(ladder):
        return Step("accept", "top-of-ladder")
    if len(attempts) - 1 >= max_escalations:
        return Step("stop", "max-escalations")
    nxt = ladder[position + 1]
    if budget is not None and next_estimate is not None and not budget.met_by(next_estimate, spent_ms):
        return Step("stop", "budget-spent")
    return Step("escalate", last.judgement.reason, nxt)


def best_attempt(attempts: Sequence[Attempt]) -> int:
    """Index of the answer to return when the cascade stops without accepting one."""

    def doubt(i: int) -> tuple[float, int]:
        j = attempts[i].judgement
        # Ties go to the later (larger) tier.
        return (0.0 if j is None else j.p_not_good_enough, -i)

    return min(range(len(attempts)), key=doubt)
