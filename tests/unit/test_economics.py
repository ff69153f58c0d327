"""Tier priors and prices from the planner, and the profile's overrides."""

from __future__ import annotations

import pytest

from deployments.economics import GENERIC_PRIOR, parse_latency_plan, planned, tier_economics
from deployments.profile import TierSpec
from router.errors import ConfigError


def test_latency_plan_syntax() -> None:
    assert parse_latency_plan("llama-3.1-8b@l4") == ("llama-3.1-8b", "l4", None)
    assert parse_latency_plan("llama-3.3-70b@h100-80gbx4") == ("llama-3.3-70b", "h100-80gb", 4)
    with pytest.raises(ConfigError, match="MODEL@GPU"):
        parse_latency_plan("llama-3.1-8b")


def test_larger_models_are_slower_per_token_on_the_same_gpu() -> None:
    small, _, small_out = planned("llama-3.2-1b", "h100-80gb")
    mid, _, mid_out = planned("llama-3.1-8b", "h100-80gb")
    assert small.decode_ms_per_token < mid.decode_ms_per_token
    assert small.prefill_ms_per_token < mid.prefill_ms_per_token
    assert small_out < mid_out
    assert small.decode_ms_per_token_full_batch >= small.decode_ms_per_token


def test_a_model_that_does_not_fit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="does not fit"):
        planned("llama-3.3-70b", "l4", 1)


def test_profile_prices_override_the_plan_and_a_bare_tier_gets_the_generic_prior() -> None:
    bare = TierSpec(name="t", endpoint="http://127.0.0.1:1/v1", upstream_model="m")
    econ = tier_economics(bare)
    assert (econ.prior, econ.source, econ.cost_usd(1000, 1000)) == (GENERIC_PRIOR, "generic", 0.0)
    priced = TierSpec(
        name="t",
        endpoint="http://127.0.0.1:1/v1",
        upstream_model="m",
        latency_plan="llama-3.1-8b@h100-80gb",
        price_per_million_output_tokens_usd=2.0,
        price_per_million_prompt_tokens_usd=0.5,
    )
    econ = tier_economics(priced)
    assert econ.cost_usd(2_000_000, 1_000_000) == pytest.approx(3.0)
    assert econ.prior != GENERIC_PRIOR


def test_the_profile_gpu_price_reprices_tokens() -> None:
    def tier(price: float) -> TierSpec:
        return TierSpec(
            name="t",
            endpoint="http://127.0.0.1:1/v1",
            upstream_model="m",
            latency_plan="llama-3.1-8b@h100-80gb",
            price_per_gpu_hour_usd=price,
        )

    listed, doubled = tier_economics(tier(0.0)), tier_economics(tier(2 * 2.0))
    base = tier_economics(tier(2.0))
    assert doubled.output_usd_per_million == pytest.approx(2 * base.output_usd_per_million)
    assert listed.output_usd_per_million > 0
