"""Context arithmetic: a prompt fits when it leaves room for an answer; max_tokens is capped to that room."""

from __future__ import annotations

import pytest

from router.runtime.context_fit import OutputPlan, fitting, plan_output


def test_absurd_max_tokens_is_capped_to_what_the_context_leaves() -> None:
    plan = plan_output(prompt_tokens=1_000, context_tokens=8_192, requested=1_000_000_000, default=512)
    assert plan.max_tokens == 7_192 and plan.capped and plan.fits
    assert plan.kv_tokens == 8_192  # what admission reserves: one context, never the caller's 1e9


def test_a_max_tokens_that_fits_passes_unchanged() -> None:
    plan = plan_output(prompt_tokens=1_000, context_tokens=8_192, requested=7_192, default=512)
    assert plan.max_tokens == 7_192 and not plan.capped


def test_the_default_is_lowered_to_the_room_but_never_reported_as_the_callers_cap() -> None:
    plan = plan_output(prompt_tokens=8_000, context_tokens=8_192, requested=None, default=512)
    assert plan.max_tokens == 192 and not plan.capped
    assert plan_output(100, 8_192, None, 512).max_tokens == 512


@pytest.mark.parametrize(("prompt", "fits"), [(8_191, True), (8_192, False), (9_000, False)])
def test_a_prompt_fits_only_when_one_answer_token_is_left(prompt: int, fits: bool) -> None:
    plan = plan_output(prompt, 8_192, None, 512)
    assert plan.fits is fits
    assert plan.max_tokens == (1 if fits else 0)


def test_fitting_keeps_the_ladder_order_and_drops_tiers_too_small() -> None:
    contexts = {"small": 2_048, "medium": 8_192, "large": 32_768}

    def plan(name: str) -> OutputPlan:
        return plan_output(5_000, contexts[name], 100, 512)

    assert fitting(("small", "medium", "large"), plan) == ("medium", "large")
    assert fitting(("small",), plan) == ()
