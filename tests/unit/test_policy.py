from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from router.runtime.policy import Decision, HeuristicScorer, PolicyConfig, RoutingRequest, decide
from router.runtime.prompt_features import extract, heuristic_complexity

NAMES = ("small", "medium", "large")
CONFIG = PolicyConfig(NAMES, (0.3, 0.7), {"realtime": 0, "interactive": None, "batch": None})


class FixedScorer:
    """A scorer with a set score: isolates the policy from feature extraction."""

    version = "fixed"

    def __init__(self, score: float) -> None:
        self.score = score

    def scores(self, request: RoutingRequest, n_rungs: int) -> list[float]:
        return [self.score] * n_rungs


def _decide(score: float, cls: str = "interactive", unavailable: frozenset[str] = frozenset()) -> Decision:
    return decide(RoutingRequest("x", latency_class=cls), CONFIG, FixedScorer(score), unavailable)  # type: ignore[arg-type]


def test_the_notes_thresholds_pick_each_tier() -> None:
    assert _decide(0.1).tier == "small"
    assert _decide(0.5).tier == "medium"
    assert _decide(0.9).tier == "large"


@given(st.floats(0, 1), st.floats(0, 1))
def test_tier_choice_is_monotone_in_the_score(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert _decide(lo).tier_index <= _decide(hi).tier_index


@given(st.floats(0, 1), st.sampled_from(["realtime", "interactive", "batch"]))
def test_the_latency_class_cap_is_never_exceeded_while_capped_tiers_are_up(score: float, cls: str) -> None:
    d = _decide(score, cls)
    cap = CONFIG.class_max_tier.get(cls)
    assert cap is None or d.tier_index <= cap
    assert d.ladder[0] == d.tier


def test_an_unavailable_tier_is_skipped_upward_first() -> None:
    d = _decide(0.1, unavailable=frozenset({"small"}))
    assert d.tier == "medium" and d.reason.startswith("fallback")
    d = _decide(0.9, unavailable=frozenset({"large"}))
    assert d.tier == "medium"


def test_a_capped_class_still_gets_an_answer_when_its_tiers_are_down() -> None:
    d = _decide(0.1, "realtime", unavailable=frozenset({"small"}))
    assert d.tier == "medium" and d.reason == "cap-overridden-all-capped-tiers-unavailable"


def test_ladder_runs_from_the_choice_to_the_cap() -> None:
    assert _decide(0.1).ladder == ("small", "medium", "large")
    assert _decide(0.1, "realtime").ladder == ("small",)


@given(st.text(max_size=3000), st.integers(1, 50))
def test_heuristic_complexity_stays_in_unit_interval_for_any_text(text: str, turns: int) -> None:
    assert 0.0 <= heuristic_complexity(extract(text, turns)) <= 1.0


def test_heuristic_ranks_a_hard_prompt_above_a_greeting() -> None:
    scorer = HeuristicScorer()
    easy = scorer.scores(RoutingRequest("Hello!"), 2)[0]
    hard = scorer.scores(RoutingRequest("Explain step by step and prove: 2 + 2 = 4. def f(): return 1"), 2)[0]
    assert easy < 0.3 < hard


def test_huge_and_odd_inputs_do_not_raise() -> None:
    for text in ["", "日本語のテキスト" * 1000, "\x00\ud7ff" * 10, "x" * 2_000_000]:
        assert len(HeuristicScorer().scores(RoutingRequest(text), 2)) == 2


def test_one_tier_policy_always_picks_it() -> None:
    cfg = PolicyConfig(("only",), ())
    assert decide(RoutingRequest("anything"), cfg, HeuristicScorer()).tier == "only"
