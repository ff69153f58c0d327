"""Latency estimates: priors, load, online correction; the SLO-aware choice in the policy."""

from __future__ import annotations

import time

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployments.profile import load_profile
from gateway.accounting import Accounting
from gateway.context import RequestContext
from gateway.metrics import GatewayMetrics
from gateway.protocol import parse_chat_request
from gateway.routing import Route
from gateway.state import AppState
from gateway.tiers import Tier
from router.runtime.policy import HeuristicScorer, PolicyConfig, RoutingRequest, decide
from router.runtime.slo import DEFAULT_OUTPUT_TOKENS, Budget, Estimate, LatencyEstimator, LatencyPrior, TierLoad

PRIOR = LatencyPrior(
    ttft_fixed_ms=10.0,
    prefill_ms_per_token=0.1,
    decode_ms_per_token=5.0,
    decode_ms_per_token_full_batch=10.0,
    max_batch=4,
)


def test_estimate_from_priors_alone() -> None:
    est = LatencyEstimator({"t": PRIOR}).estimate("t", prompt_tokens=100, max_tokens=11)
    assert est.ttft_ms == pytest.approx(20.0)
    assert est.total_ms == pytest.approx(20.0 + 10 * 5.0)


def test_full_batch_queues_and_slows_decode() -> None:
    est = LatencyEstimator({"t": PRIOR})
    idle = est.estimate("t", 100, 11, TierLoad(0, 0, "engine"))
    busy = est.estimate("t", 100, 11, TierLoad(4, 3, "engine"))
    assert busy.ttft_ms > idle.ttft_ms + 100  # waited for a batch slot
    assert busy.total_ms - busy.ttft_ms == pytest.approx(10 * 10.0)  # decoding in a full batch


def test_observations_correct_the_prior_towards_what_is_seen() -> None:
    est = LatencyEstimator({"t": PRIOR}, alpha=0.5)
    for _ in range(20):
        est.observe("t", prompt_tokens=100, completion_tokens=11, ttft_ms=60.0, total_ms=60.0 + 10 * 15.0)
    got = est.estimate("t", 100, 11)
    assert got.ttft_ms == pytest.approx(60.0, rel=0.01)
    assert got.total_ms == pytest.approx(210.0, rel=0.01)


def test_one_stalled_request_is_bounded() -> None:
    est = LatencyEstimator({"t": PRIOR}, alpha=0.2)
    est.observe("t", prompt_tokens=100, completion_tokens=11, ttft_ms=1e9, total_ms=1e9)
    assert est.corrections("t")["ttft_ratio"] <= 1.0 * 0.8 + 0.2 * 20.0


@given(st.integers(0, 4000), st.integers(1, 2000), st.floats(0, 64), st.floats(0, 64))
def test_estimates_are_monotone_in_size_and_load(prompt: int, out: int, running: float, waiting: float) -> None:
    est = LatencyEstimator({"t": PRIOR})
    base = est.estimate("t", prompt, out, TierLoad(running, waiting))
    assert est.estimate("t", prompt + 100, out, TierLoad(running, waiting)).ttft_ms >= base.ttft_ms
    assert est.estimate("t", prompt, out, TierLoad(running + 1, waiting + 1)).total_ms >= base.total_ms
    assert base.total_ms >= base.ttft_ms >= 0


def test_budget_counts_time_already_spent() -> None:
    b = Budget(ttft_ms=None, total_ms=1000.0)
    assert b.met_by(Estimate(100, 900))
    assert not b.met_by(Estimate(100, 900), spent_ms=200)
    assert Budget(ttft_ms=50).met(ttft_ms=40, total_ms=5000)
    assert not Budget(ttft_ms=50).met(ttft_ms=None, total_ms=60)


class _Hard:
    """A scorer that finds every request too hard for all but the top tier."""

    version = "hard"

    def scores(self, request: RoutingRequest, n_rungs: int) -> list[float]:
        return [0.99] * n_rungs


CONFIG = PolicyConfig(tier_names=("small", "mid", "large"), thresholds=(0.3, 0.7))
EASY = RoutingRequest(text="hi")


def test_cheapest_accepted_tier_that_meets_the_budget_wins() -> None:
    est = {"small": Estimate(50, 500), "mid": Estimate(80, 800), "large": Estimate(300, 3000)}
    d = decide(EASY, CONFIG, HeuristicScorer(), estimates=est, budget=Budget(total_ms=1000))
    assert (d.tier, d.slo_at_risk) == ("small", False)


def test_a_slow_cheap_tier_moves_the_request_up_never_down() -> None:
    est = {"small": Estimate(50, 5000), "mid": Estimate(80, 800), "large": Estimate(300, 3000)}
    d = decide(EASY, CONFIG, HeuristicScorer(), estimates=est, budget=Budget(total_ms=1000))
    assert (d.tier, d.reason, d.slo_at_risk) == ("mid", "slo-moved-up-from-small", False)
    fast_small = {"small": Estimate(1, 10), "mid": Estimate(1, 10), "large": Estimate(300, 3000)}
    d = decide(EASY, CONFIG, _Hard(), estimates=fast_small, budget=Budget(total_ms=100))
    assert d.tier == "large" and d.slo_at_risk  # the budget cannot buy a cheaper, weaker tier


def test_when_nothing_meets_the_budget_the_fastest_adequate_tier_is_flagged() -> None:
    est = {"small": Estimate(500, 5000), "mid": Estimate(80, 2000), "large": Estimate(300, 3000)}
    d = decide(EASY, CONFIG, HeuristicScorer(), estimates=est, budget=Budget(total_ms=100))
    assert (d.tier, d.reason, d.slo_at_risk) == ("mid", "slo-fastest-adequate", True)


def test_an_unstreamed_answer_corrects_decode_only() -> None:
    est = LatencyEstimator({"t": PRIOR}, alpha=1.0)
    est.observe("t", prompt_tokens=100, completion_tokens=11, ttft_ms=None, total_ms=20.0 + 10 * 10.0)
    c = est.corrections("t")
    assert c["ttft_ratio"] == 1.0 and c["itl_ratio"] == pytest.approx(2.0)


def test_an_observation_through_one_tier_moves_the_estimate_of_another_on_its_engine() -> None:
    est = LatencyEstimator({"a": PRIOR, "b": PRIOR, "c": PRIOR}, engines={"a": "e", "b": "e"})
    before_b, before_c = est.estimate("b", 100, 11), est.estimate("c", 100, 11)
    # The shared engine is busy: what tier a sees takes three times what the prior says.
    for _ in range(10):
        est.observe("a", prompt_tokens=100, completion_tokens=11, ttft_ms=60.0, total_ms=60.0 + 10 * 15.0)
    after_b = est.estimate("b", 100, 11)
    assert after_b.ttft_ms > 2 * before_b.ttft_ms and after_b.total_ms > 2 * before_b.total_ms
    assert est.estimate("c", 100, 11) == before_c  # another engine learnt nothing
    # How long answers run is each tier's own (its own traffic), not the engine's.
    assert est.corrections("a")["output_tokens"] < est.corrections("b")["output_tokens"] == DEFAULT_OUTPUT_TOKENS


def test_tiers_on_one_engine_must_share_one_prior() -> None:
    slower = LatencyPrior(20.0, 0.1, 5.0, 10.0, 4)
    with pytest.raises(ValueError, match="share engine 'e' but not a latency prior"):
        LatencyEstimator({"a": PRIOR, "b": slower}, engines={"a": "e", "b": "e"})


def test_load_observed_as_modelled_leaves_the_idle_estimate_at_the_prior() -> None:
    # A tier whose real latency follows the load model exactly: every busy-period slowdown is
    # explained by the load term, so the learnt ratios stay 1 and the idle estimate stays put.
    est = LatencyEstimator({"t": PRIOR})
    idle_before = est.estimate("t", 100, 11, TierLoad(0, 0, "engine"))
    busy = TierLoad(8, 6, "engine")
    for _ in range(50):
        seen = est.estimate("t", 100, 11, busy)
        est.observe(
            "t", prompt_tokens=100, completion_tokens=11, ttft_ms=seen.ttft_ms, total_ms=seen.total_ms, load=busy
        )
    idle_after = est.estimate("t", 100, 11, TierLoad(0, 0, "engine"))
    assert idle_after.ttft_ms == pytest.approx(idle_before.ttft_ms, rel=1e-6)
    assert idle_after.total_ms == pytest.approx(idle_before.total_ms, rel=1e-6)


def test_the_gateway_observes_at_the_routed_load_so_the_idle_estimate_stays_at_the_prior() -> None:
    est = LatencyEstimator({"t": PRIOR})
    accounting = Accounting(GatewayMetrics(["t"], router_version="v", policy="rule"), {}, est, "t")
    idle_before = est.estimate("t", 100, 11, TierLoad())
    busy = TierLoad(8, 6, "engine")
    tier = Tier("t", "http://127.0.0.1:1/v1/chat/completions", "http://127.0.0.1:1/v1/models", "m", 64, 4096)
    for _ in range(30):
        # What the tier really takes: the load model, exactly (it moves as the typical length is learnt).
        seen = est.estimate("t", 100, 11, busy)
        route = Route(
            tier, ("t",), Budget(None, None), "interactive", False, 100, estimates={"t": seen}, loads={"t": busy}
        )
        now = time.perf_counter()
        ctx = RequestContext(request_id="r", t0=now - seen.total_ms / 1e3)
        ctx.ttft_s = seen.ttft_ms / 1e3
        ctx.prompt_tokens, ctx.completion_tokens = 100, 11
        accounting.observe(ctx, "t", route, streamed=True)
    # Before the load travelled with the route the ratios absorbed the busy slowdown (several x).
    assert est.estimate("t", 100, 11, TierLoad()).ttft_ms == pytest.approx(idle_before.ttft_ms, rel=0.05)


def test_a_request_pinned_to_a_tier_carries_the_load_it_met_for_the_estimator() -> None:
    state = AppState(load_profile("test-fake", apply_env=False))
    chooser = state.service.chooser
    leases = [state.admission["small"].try_lease(10) for _ in range(3)]
    assert all(lease is not None for lease in leases)
    raw = orjson.dumps({"model": "small", "messages": [{"role": "user", "content": "hi"}]})
    route, decision = chooser.decide({}, parse_chat_request(raw), "small")
    assert decision is None  # pinned: no routing decision, no estimate
    assert route.estimates == {}
    # The three requests in flight are the load the pinned answer's time is compared at.
    assert route.loads["small"].running == 3.0
