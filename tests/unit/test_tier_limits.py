"""Limits that follow the tier: contexts and tokenizers from the profile, answer budgets per tier, and
each gateway process's share of a tier's KV budget."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from deployments.limits import context_tokens, tokenizer_file
from deployments.model import MARKER_NAME, stand_in_dir
from deployments.profile import Profile, ProfileError, TierSpec, load_profile, parse_profile
from gateway.admission import process_share
from gateway.limits import TierLimit, TierLimits, apply_plan
from gateway.prompt_tokens import TokenCounter, load_counter, template_margin
from gateway.protocol import parse_chat_request
from gateway.settings import GatewaySettings
from gateway.state import AppState, admission_gates
from router.runtime.prompt_features import estimate_tokens
from tests.tiny_tokenizer import count, write_tokenizer


def _tier(name: str, **kw: Any) -> TierSpec:
    return TierSpec.model_validate({"name": name, "endpoint": "http://127.0.0.1:9/v1", "upstream_model": name, **kw})


def _request(text: str, **fields: Any) -> Any:
    return parse_chat_request(
        orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": text}], **fields})
    )


# --- contexts and tokenizers, from the profile


def test_the_engines_max_model_len_lowers_every_context_of_its_tiers() -> None:
    owner = _tier(
        "small", engine="e", context_length_tokens=8192, serving={"model_source": "x", "max_model_len_tokens": 2048}
    )
    sibling = _tier("large", engine="e", context_length_tokens=4096)
    alone = _tier("other", context_length_tokens=4096)
    tiers = [owner, sibling, alone]
    assert [context_tokens(t, tiers) for t in tiers] == [2048, 2048, 4096]


def test_the_shipped_local_profile_counts_with_the_stand_in_tokenizer_when_prepared() -> None:
    profile = load_profile("local-cpu", apply_env=False)
    found = {t.name: tokenizer_file(t, profile.tiers) for t in profile.tiers}
    if (stand_in_dir() / MARKER_NAME).is_file():
        assert set(found.values()) == {stand_in_dir() / "tokenizer.json"}
    else:
        assert set(found.values()) == {None}  # the documented fallback: the estimate


def test_a_named_tokenizer_folder_is_used_and_shared_by_its_engine(tmp_path: Path) -> None:
    path = write_tokenizer(tmp_path / "tok")
    named = _tier("small", engine="e", tokenizer=str(tmp_path / "tok"))
    sibling = _tier("large", engine="e")
    assert tokenizer_file(sibling, [named, sibling]) == path
    assert tokenizer_file(_tier("x"), [named, sibling]) is None  # a hub model: no files, the estimate


def test_a_named_tokenizer_that_is_missing_fails_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="tokenizer"):
        tokenizer_file(_tier("small", tokenizer=str(tmp_path / "nope")))
    with pytest.raises(ProfileError, match="tiergate model prepare"):
        tokenizer_file(_tier("small", tokenizer="stand-in"), cache_root=tmp_path)


# --- answer budgets per tier


@pytest.fixture
def limits(tmp_path: Path) -> TierLimits:
    tok = write_tokenizer(tmp_path / "tok")
    specs = [
        _tier("small", context_length_tokens=256, default_max_tokens=64, tokenizer=str(tok)),
        _tier("large", context_length_tokens=4096, default_max_tokens=64),
    ]
    return TierLimits.from_specs(specs)


def test_near_the_limit_the_prompt_is_counted_with_the_tiers_tokenizer(limits: TierLimits, tmp_path: Path) -> None:
    text = "The capital of France is Paris. " * 4
    plan = limits.plan("small", _request(text, max_tokens=1_000_000_000))
    exact = count(tmp_path / "tok" / "tokenizer.json", text) + template_margin(1)
    assert plan.prompt_tokens == exact and plan.max_tokens == 256 - exact and plan.capped


def test_far_from_the_limit_the_estimate_sizes_the_prompt(limits: TierLimits) -> None:
    text = "Hi"
    plan = limits.plan("small", _request(text, max_tokens=10))
    assert plan.prompt_tokens == estimate_tokens(text) + template_margin(1)
    assert plan.max_tokens == 10 and not plan.capped


def test_a_tier_without_a_tokenizer_uses_the_estimate_even_near_its_limit(limits: TierLimits) -> None:
    text = "x" * 15_000  # the high guess over the context, the estimate under it
    plan = limits.plan("large", _request(text))
    assert plan.prompt_tokens == estimate_tokens(text) + template_margin(1)
    assert plan.max_tokens == 64


def test_too_long_names_the_limit_in_openai_shape(limits: TierLimits) -> None:
    err = limits.too_long(_request("x" * 40_000), ["small", "large"])
    assert (err.status_code, err.param, err.code) == (400, "messages", "context_length_exceeded")
    assert "4096" in err.message and "'large'" in err.message


@pytest.mark.parametrize(
    ("fields", "sent"),
    [
        ({}, {"max_tokens": 7}),
        ({"max_tokens": 900}, {"max_tokens": 7}),
        ({"max_completion_tokens": 900}, {"max_completion_tokens": 7}),
        ({"max_tokens": 900, "max_completion_tokens": 900}, {"max_tokens": 7, "max_completion_tokens": 7}),
    ],
)
def test_the_capped_value_goes_out_under_the_field_the_caller_used(
    fields: dict[str, int], sent: dict[str, int]
) -> None:
    from router.runtime.context_fit import plan_output

    body: dict[str, object] = {"model": "m", **fields}
    apply_plan(body, plan_output(100, 107, 900, 64))
    assert {k: body[k] for k in ("max_tokens", "max_completion_tokens") if k in body} == sent


# --- admission shares across processes


@pytest.mark.parametrize(
    ("capacity", "processes", "share"), [(1000, 1, 1000), (1000, 2, 500), (1001, 2, 500), (3, 4, 1)]
)
def test_process_shares_never_add_up_to_more_than_the_budget(capacity: int, processes: int, share: int) -> None:
    assert process_share(capacity, processes) == share
    assert share * processes <= capacity or share == 1


def test_an_unbounded_tier_stays_unbounded_and_zero_processes_is_refused() -> None:
    assert process_share(None, 4) is None
    with pytest.raises(ValueError):
        process_share(100, 0)


def _fake_profile(**gateway: Any) -> Profile:
    data = {
        "tiers": [
            {"name": "small", "endpoint": "http://127.0.0.1:9/v1", "upstream_model": "s", "kv_capacity_tokens": 1000},
            {"name": "large", "endpoint": "http://127.0.0.1:8/v1", "upstream_model": "l", "kv_capacity_tokens": 999},
        ],
        "gateway": gateway,
    }
    return parse_profile(data)


def test_workers_times_replicas_split_every_tiers_budget() -> None:
    gates = admission_gates(_fake_profile(replicas=3), processes=2 * 3)
    assert gates["small"].capacity_tokens == 166 and gates["large"].capacity_tokens == 166


def test_serve_workers_reach_each_process_through_the_settings() -> None:
    settings = GatewaySettings(profile=_fake_profile(replicas=2), workers=2)
    again = GatewaySettings.from_env(settings.to_env())
    state = AppState(again.profile, workers=again.workers)
    assert state.processes == 4 and state.admission["small"].capacity_tokens == 250


async def test_a_long_prompt_is_counted_off_the_event_loop_once(tmp_path: Path) -> None:
    seen: list[int] = []

    class Where(TokenCounter):
        def count(self, text: str) -> int:
            seen.append(threading.get_ident())
            return super().count(text)

    inner = load_counter(write_tokenizer(tmp_path / "tok"))
    limits = TierLimits({"small": TierLimit(32_768, 64, Where(inner.key, inner.tokenizer))})
    long = _request("The capital of France is Paris. " * 600, max_tokens=1_000_000_000)
    await limits.count_long_prompt(long)
    assert seen and seen[0] != threading.get_ident()
    limits.plan("small", long)
    assert len(seen) == 1  # the plan found the count made
    short = _request("Hi", max_tokens=1_000_000_000)
    await limits.count_long_prompt(short)
    assert len(seen) == 1  # a short prompt is counted inline, when a plan needs it


def test_the_model_list_shows_the_engines_limit_not_a_larger_tier_setting() -> None:
    profile = parse_profile(
        {
            "tiers": [
                {
                    "name": "small",
                    "endpoint": "http://127.0.0.1:9/v1",
                    "upstream_model": "s",
                    "context_length_tokens": 8192,
                    "kv_capacity_tokens": 10_000,
                    "serving": {"model_source": "x", "max_model_len_tokens": 2048},
                }
            ]
        }
    )
    listed = AppState(profile).model_list(0)["data"]
    assert listed[1]["tiergate"]["context_length_tokens"] == 2048
