"""Engine identity: each tier names the engine behind it, and both the Ray Serve build and the
gateway's admission gates group tiers by that one field."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from deployments.app import ServeBuildError, llm_config_dicts, served_models
from deployments.economics import tier_economics
from deployments.launcher import profile_yaml
from deployments.profile import Profile, ProfileError, load_profile, parse_profile
from gateway.state import admission_gates, latency_estimator
from router.runtime.slo import LatencyEstimator

URL = "http://127.0.0.1:8100/v1"


def _tier(
    name: str, *, engine: str | None = None, model: str = "m", serving: bool = False, **extra: Any
) -> dict[str, Any]:
    tier: dict[str, Any] = {"name": name, "endpoint": URL, "upstream_model": model, **extra}
    if engine is not None:
        tier["engine"] = engine
    if serving:
        tier["serving"] = {"model_source": "x"}
    return tier


def _profile(*tiers: dict[str, Any]) -> Profile:
    return parse_profile({"name": "t", "tiers": list(tiers)})


def test_a_tier_that_names_no_engine_has_an_engine_of_its_own() -> None:
    profile = _profile(_tier("a", model="x"), _tier("b", model="y"))
    assert [t.engine for t in profile.tiers] == ["a", "b"]


def test_the_local_profile_names_one_engine_for_its_three_tiers() -> None:
    profile = load_profile("local-cpu", apply_env=False)
    assert {t.engine for t in profile.tiers} == {"stand-in"}
    [served] = served_models(profile)
    assert served.engine == "stand-in"
    assert served.tiers == ("small", "medium", "large")


@pytest.mark.parametrize("name", ["gpu-a100", "gpu-h100", "test-fake"])
def test_fleet_profiles_give_every_tier_its_own_engine(name: str) -> None:
    profile = load_profile(name, apply_env=False)
    assert [t.engine for t in profile.tiers] == [t.name for t in profile.tiers]


@pytest.mark.parametrize(
    ("second", "field"),
    [
        ({"model": "other"}, "upstream_model"),
        ({"endpoint": "http://127.0.0.1:8200/v1"}, "endpoint"),
    ],
)
def test_tiers_naming_one_engine_must_agree_on_its_endpoint_and_model(second: dict[str, Any], field: str) -> None:
    b = _tier("b", engine="e")
    if "model" in second:
        b["upstream_model"] = second["model"]
    else:
        b["endpoint"] = second["endpoint"]
    with pytest.raises(ProfileError, match=rf"name engine 'e' but differ in {field}"):
        _profile(_tier("a", engine="e", serving=True), b)


def test_a_trailing_slash_does_not_make_another_endpoint() -> None:
    profile = _profile(_tier("a", engine="e", serving=True), {**_tier("b", engine="e"), "endpoint": URL + "/"})
    assert [s.tiers for s in served_models(profile)] == [("a", "b")]


def test_tiers_naming_one_engine_may_not_describe_it_twice_differently() -> None:
    a = _tier("a", engine="e", serving=True)
    b = {**_tier("b", engine="e"), "serving": {"model_source": "x", "max_num_seqs": 4}}
    with pytest.raises(ProfileError, match="different serving sections"):
        _profile(a, b)


def test_a_tier_reaching_a_served_engine_under_another_name_is_told_which_engine_to_name() -> None:
    # What profiles written before engines were named look like: sharing by upstream_model alone.
    with pytest.raises(ProfileError, match="set engine: a on it"):
        _profile(_tier("a", serving=True), _tier("b"))


def test_tiers_naming_one_engine_are_one_deployment_and_one_admission_gate() -> None:
    profile = _profile(
        _tier("a", engine="e", serving=True), _tier("b", engine="e"), _tier("c", model="n", serving=True)
    )
    assert [(s.engine, s.model_id, s.tiers) for s in served_models(profile)] == [
        ("e", "m", ("a", "b")),
        ("c", "n", ("c",)),
    ]
    assert len(llm_config_dicts(profile)) == 2
    gates = admission_gates(profile)
    assert gates["a"] is gates["b"]
    assert gates["c"] is not gates["a"]


def test_external_tiers_on_one_model_keep_separate_budgets_unless_they_name_one_engine() -> None:
    apart = admission_gates(_profile(_tier("a"), _tier("b")))
    assert apart["a"] is not apart["b"]
    shared = admission_gates(_profile(_tier("a", engine="api"), _tier("b", engine="api")))
    assert shared["a"] is shared["b"]


def test_two_engines_may_not_deploy_one_model_id() -> None:
    profile = _profile(_tier("a", serving=True), _tier("b", serving=True))
    with pytest.raises(ServeBuildError, match="name one engine for both"):
        served_models(profile)


def test_engine_names_survive_the_profile_the_launcher_hands_the_gateway() -> None:
    profile = load_profile("local-cpu", apply_env=False)
    again = parse_profile(yaml.safe_load(profile_yaml(profile)))
    assert [t.engine for t in again.tiers] == [t.engine for t in profile.tiers]


def _estimator(profile: Profile) -> LatencyEstimator:
    return latency_estimator(profile, {t.name: tier_economics(t) for t in profile.tiers})


def test_a_busy_engine_seen_through_one_tier_slows_the_estimate_of_its_other_tiers() -> None:
    est = _estimator(_profile(_tier("a", engine="e", serving=True), _tier("b", engine="e"), _tier("c", model="n")))
    before_b, before_c = est.estimate("b", 100, 16), est.estimate("c", 100, 16)
    for _ in range(10):
        guess = est.estimate("a", 100, 16)
        est.observe(
            "a", prompt_tokens=100, completion_tokens=16, ttft_ms=3 * guess.ttft_ms, total_ms=3 * guess.total_ms
        )
    assert est.estimate("b", 100, 16).total_ms > 2 * before_b.total_ms
    assert est.estimate("c", 100, 16) == before_c


def test_an_engine_takes_the_plan_one_of_its_tiers_gives_and_refuses_two() -> None:
    plan = "llama-3.1-8b@h100-80gb"
    est = _estimator(_profile(_tier("a", engine="api"), _tier("b", engine="api", latency_plan=plan)))
    assert (
        est.estimate("a", 100, 16)
        == est.estimate("b", 100, 16)
        != _estimator(_profile(_tier("a"))).estimate("a", 100, 16)
    )
    other = "llama-3.3-70b@h100-80gbx4"
    twice = _profile(_tier("a", engine="api", latency_plan=plan), _tier("b", engine="api", latency_plan=other))
    with pytest.raises(ProfileError, match="'a' and 'b' name engine 'api' but plan different latencies"):
        _estimator(twice)
