"""The estimator is taught after the last byte at the engine load the route was chosen under."""

from __future__ import annotations

import time

import pytest

from gateway.accounting import Accounting
from gateway.context import RequestContext
from gateway.metrics import GatewayMetrics
from gateway.routing import Route
from gateway.tiers import Tier
from router.runtime.slo import Budget, LatencyEstimator, LatencyPrior, TierLoad

PRIOR = LatencyPrior(
    ttft_fixed_ms=10.0,
    prefill_ms_per_token=0.1,
    decode_ms_per_token=5.0,
    decode_ms_per_token_full_batch=10.0,
    max_batch=4,
)


def test_busy_requests_that_match_the_load_model_leave_the_idle_estimate_at_the_prior() -> None:
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
