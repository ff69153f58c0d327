"""The replay harness's pure parts: arrivals, SLO mix, answer scoring and the metrics report."""

from __future__ import annotations

import pytest

from gateway.replay_scoring import (
    BASELINES,
    METRIC_KEYS,
    Observed,
    compare,
    parse_slo_mix,
    poisson_arrivals,
    render_table,
    score_answer,
    slo_met,
    summarize,
)
from gateway.replay_tier import ReplayError
from router.offline.outcomes import OutcomeRow

BUDGETS = {"realtime": 100.0, "interactive": 1000.0, "batch": 10000.0}
MODELS = {"small": "s-model", "mid": "m-model", "large": "l-model"}
ROW = OutcomeRow(
    id="r1",
    benchmark="b",
    prompt="p",
    scores={"s-model": 0.0, "m-model": 1.0, "l-model": 1.0},
    responses={"s-model": "B", "m-model": "A", "l-model": "A."},
)


def _obs(
    tier: str | None = "large",
    score: float = 1.0,
    cost: float = 1.0,
    ms: float = 50.0,
    met: bool = True,
    ok: bool = True,
    esc: int = 0,
) -> Observed:
    return Observed("interactive", 200 if ok else 503, ok, tier, score, cost, ms, ms, met, esc)


def test_slo_mix_is_normalised_and_checked() -> None:
    assert parse_slo_mix("realtime=1,batch=3") == {"realtime": 0.25, "batch": 0.75}
    for bad in ("realtime", "fast=1", "batch=x", "batch=0", "batch=-1"):
        with pytest.raises(ReplayError):
            parse_slo_mix(bad)


def test_arrivals_are_deterministic_poisson_and_bounded() -> None:
    mix = {"realtime": 0.5, "batch": 0.5}
    a = poisson_arrivals(10, rate=50.0, duration_s=20.0, mix=mix, seed=3)
    assert a == poisson_arrivals(10, rate=50.0, duration_s=20.0, mix=mix, seed=3)
    assert a != poisson_arrivals(10, rate=50.0, duration_s=20.0, mix=mix, seed=4)
    assert 900 < len(a) < 1100  # 1000 expected; a Poisson count's sd is ~32
    assert all(0 <= x.at_s < 20.0 for x in a)
    assert [x.at_s for x in a] == sorted(x.at_s for x in a)
    assert sorted(x.prompt for x in a[:10]) == list(range(10))  # one shuffled pass before repeating
    assert {x.latency_class for x in a} == {"realtime", "batch"}
    assert {x.random_tier for x in a} == {"small", "mid", "large"}
    assert len(poisson_arrivals(10, 50.0, 20.0, mix, seed=3, max_requests=7)) == 7


def test_score_follows_the_tier_header_else_the_answer_text() -> None:
    assert score_answer("small", "whatever", ROW, MODELS) == ("small", 0.0)
    assert score_answer("large", "B", ROW, MODELS) == ("large", 1.0)
    assert score_answer(None, "A", ROW, MODELS) == ("mid", 1.0)
    assert score_answer("none", "B", ROW, MODELS) == ("small", 0.0)
    assert score_answer(None, "made up", ROW, MODELS) == (None, 0.0)


def test_slo_uses_the_gateway_verdict_else_the_class_budget() -> None:
    assert slo_met("realtime", 10.0, 99.0, None, BUDGETS)
    assert not slo_met("realtime", 10.0, 101.0, None, BUDGETS)
    assert slo_met("batch", 10.0, 9000.0, None, BUDGETS)
    assert not slo_met("batch", 1.0, 1.0, "missed", BUDGETS)
    assert slo_met("realtime", 500.0, 500.0, "met", BUDGETS)


def test_summary_counts_failures_as_zero_quality_and_missed() -> None:
    runs = [_obs(score=1.0, ms=10), _obs(score=0.0, ms=30, esc=1), _obs(ok=False, tier=None, score=0.0, met=False)]
    s = summarize(runs)
    assert s["requests"] == 3 and s["errors"] == 1
    assert s["quality"] == pytest.approx(1 / 3)
    assert s["slo_attainment"] == pytest.approx(2 / 3)
    assert s["escalation_rate"] == pytest.approx(1 / 3)
    assert s["p50_ttft_ms"] == 10 and s["p99_ttft_ms"] == 30  # failures carry no TTFT
    assert s["errors_by_status"] == {"503": 1}
    assert summarize([])["requests"] == 0


def test_report_ratios_are_relative_to_always_large() -> None:
    runs = {
        "policy": [_obs("small", 1.0, 1.0), _obs("large", 1.0, 10.0)],
        "always_small": [_obs("small", 0.0, 1.0), _obs("small", 1.0, 1.0)],
        "always_mid": [_obs("mid", 1.0, 3.0), _obs("mid", 0.0, 3.0)],
        "always_large": [_obs("large", 1.0, 10.0), _obs("large", 1.0, 10.0)],
        "random": [_obs("small", 0.0, 1.0), _obs("large", 1.0, 10.0)],
    }
    report = compare(runs)
    for key in METRIC_KEYS:
        assert key in report
        for name in BASELINES:
            assert key in report["baselines"][name]
    assert report["quality_ratio"] == 1.0 and report["cost_ratio"] == pytest.approx(11 / 20)
    large = report["baselines"]["always_large"]
    assert large["quality_ratio"] == 1.0 and large["cost_ratio"] == 1.0
    assert report["baselines"]["always_small"]["quality_ratio"] == 0.5
    assert report["baselines"]["always_mid"]["cost_ratio"] == pytest.approx(0.3)
    assert report["tier_share"] == {"large": 0.5, "small": 0.5}
    table = render_table(report)
    assert "policy (auto)" in table and "always_large" in table
    with pytest.raises(ValueError, match="always_large"):
        compare({"policy": runs["policy"]})
