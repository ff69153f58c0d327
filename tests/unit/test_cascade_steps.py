"""The live cascade's step rules: accept, escalate, stop on budget or escalation cap."""

from __future__ import annotations

from router.runtime.cascade import Attempt, Judgement, best_attempt, next_step
from router.runtime.slo import Budget, Estimate

LADDER = ("small", "mid", "large")
DOUBT = Judgement(True, 0.9, "verifier-doubts-answer")
OK = Judgement(False, 0.1, "accepted")


def step(attempts: list[Attempt], *, budget: Budget | None = None, spent: float = 0.0, nxt: Estimate | None = None):  # type: ignore[no-untyped-def]
    return next_step(LADDER, attempts, max_escalations=2, budget=budget, spent_ms=spent, next_estimate=nxt)


def test_low_confidence_answer_escalates_to_the_next_tier() -> None:
    s = step([Attempt("small", DOUBT)])
    assert (s.action, s.next_tier) == ("escalate", "mid")


def test_confident_answer_is_accepted() -> None:
    assert step([Attempt("small", OK)]).action == "accept"


def test_no_escalation_once_the_budget_is_spent() -> None:
    s = step([Attempt("small", DOUBT)], budget=Budget(total_ms=1000), spent=800, nxt=Estimate(100, 300))
    assert (s.action, s.reason) == ("stop", "budget-spent")
    s = step([Attempt("small", DOUBT)], budget=Budget(total_ms=1000), spent=500, nxt=Estimate(100, 300))
    assert s.action == "escalate"


def test_escalation_cap_is_respected() -> None:
    s = next_step(LADDER, [Attempt("small", DOUBT)], max_escalations=0, budget=None, spent_ms=0, next_estimate=None)
    assert (s.action, s.reason) == ("stop", "max-escalations")


def test_top_of_ladder_accepts() -> None:
    assert step([Attempt("small", DOUBT), Attempt("mid", DOUBT), Attempt("large", None)]).action == "accept"
    assert (
        next_step(
            ("mid",), [Attempt("mid", DOUBT)], max_escalations=2, budget=None, spent_ms=0, next_estimate=None
        ).reason
        == "top-of-ladder"
    )


def test_best_answer_so_far_is_the_least_doubted() -> None:
    attempts = [Attempt("small", Judgement(True, 0.6, "x")), Attempt("mid", Judgement(True, 0.4, "x"))]
    assert best_attempt(attempts) == 1
    attempts = [Attempt("small", Judgement(True, 0.3, "x")), Attempt("mid", Judgement(True, 0.4, "x"))]
    assert best_attempt(attempts) == 0
