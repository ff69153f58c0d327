from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deployments.profile import (
    ProfileError,
    load_profile,
    parse_profile,
    profile_from_upstreams,
    with_env_overrides,
)

TIER = {"name": "small", "endpoint": "http://127.0.0.1:9/v1", "upstream_model": "m"}


def test_every_shipped_profile_validates() -> None:
    for path in sorted((Path(__file__).parents[2] / "deployments" / "profiles").glob("*.yaml")):
        assert load_profile(str(path), apply_env=False).tiers


def test_a_missing_field_is_named_with_its_path() -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile({"tiers": [{"name": "small", "upstream_model": "m"}]})
    assert "tiers.0.endpoint" in str(info.value)


def test_a_typo_in_a_key_is_refused_not_ignored() -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile({"tiers": [TIER], "gateway": {"prot": 8000}})
    assert "gateway.prot" in str(info.value)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"tiers": [TIER, TIER]}, "unique"),
        ({"tiers": [{**TIER, "name": "auto"}]}, "reserved"),
        ({"tiers": [TIER, {**TIER, "name": "b"}], "routing": {"thresholds": [0.2, 0.5]}}, "needs 1 values"),
        (
            {
                "tiers": [TIER, {**TIER, "name": "b"}, {**TIER, "name": "c"}],
                "routing": {"thresholds": [0.7, 0.3]},
            },
            "ascending",
        ),
        (
            {
                "tiers": [TIER],
                "routing": {"latency_classes": {"realtime": {"budget_ms": 50, "max_tier": "x"}}},
            },
            "latency_classes",
        ),
        ({"tiers": [TIER], "gateway": {"api_keys": ["short"]}}, "at least 8"),
        ({"tiers": [TIER], "gateway": {"port": 8100}}, "must differ"),
        ({"tiers": []}, "tiers"),
        ([1, 2], "mapping"),
    ],
)
def test_invalid_profiles_fail_with_a_clear_message(data: object, fragment: str) -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile(data)
    assert fragment in str(info.value)


def test_shipped_profile_by_name_and_unknown_name_lists_choices() -> None:
    assert load_profile("test-fake", apply_env=False).name == "test-fake"
    with pytest.raises(ProfileError) as info:
        load_profile("no-such-profile")
    assert "local-cpu" in str(info.value)


def test_bad_yaml_is_a_profile_error(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("tiers: [unclosed")
    with pytest.raises(ProfileError):
        load_profile(str(path))


def test_env_keys_replace_profile_keys_and_are_validated() -> None:
    profile = parse_profile({"tiers": [TIER], "gateway": {"api_keys": ["profile-key-123"]}})
    swapped = with_env_overrides(profile, {"TIERGATE_API_KEYS": "env-key-aaaa, env-key-bbbb"})
    assert [k.get_secret_value() for k in swapped.gateway.api_keys] == ["env-key-aaaa", "env-key-bbbb"]
    assert with_env_overrides(profile, {}) is profile
    with pytest.raises(ProfileError):
        with_env_overrides(profile, {"TIERGATE_API_KEYS": "tiny"})


def test_keys_never_show_in_a_dump() -> None:
    profile = parse_profile({"tiers": [TIER], "gateway": {"api_keys": ["profile-key-123"]}})
    assert "profile-key-123" not in yaml.safe_dump(profile.model_dump(mode="json"))


def test_default_thresholds_follow_the_strategy_doc_for_three_tiers_and_spread_otherwise() -> None:
    three = parse_profile({"tiers": [TIER, {**TIER, "name": "b"}, {**TIER, "name": "c"}]})
    assert three.routing.thresholds_for(3) == [0.3, 0.7]
    two = profile_from_upstreams([("a", "http://x/v1"), ("b", "http://y/v1")], host="127.0.0.1", port=8000)
    assert two.routing.thresholds_for(2) == [0.5]
    assert [t.upstream_model for t in two.tiers] == ["a", "b"]


def test_admin_key_comes_from_env_and_must_be_strong_and_distinct() -> None:
    profile = parse_profile({"tiers": [TIER], "gateway": {"api_keys": ["profile-key-123"]}})
    with_admin = with_env_overrides(profile, {"TIERGATE_ADMIN_KEY": "admin-key-0123456789"})
    assert with_admin.gateway.admin_key is not None
    assert with_admin.gateway.admin_key.get_secret_value() == "admin-key-0123456789"
    for bad in ("short-admin", "profile-key-123"):
        with pytest.raises(ProfileError):
            with_env_overrides(profile, {"TIERGATE_ADMIN_KEY": bad})


def test_serve_url_moves_only_tiers_served_by_the_profiles_own_ray_serve() -> None:
    profile = parse_profile(
        {
            "ray_serve_http_port": 8100,
            "tiers": [
                {**TIER, "name": "a", "endpoint": "http://127.0.0.1:8100/v1"},
                {**TIER, "name": "b", "endpoint": "https://api.example.test/v1"},
            ],
        }
    )
    moved = with_env_overrides(profile, {"TIERGATE_SERVE_URL": "http://tiergate-serve-svc:8100/"})
    assert [t.endpoint for t in moved.tiers] == ["http://tiergate-serve-svc:8100/v1", "https://api.example.test/v1"]
    with pytest.raises(ProfileError):
        with_env_overrides(profile, {"TIERGATE_SERVE_URL": "tiergate-serve-svc:8100"})


@pytest.mark.parametrize(
    ("gateway", "refused"),
    [
        ({"host": "0.0.0.0"}, True),
        ({"host": "10.1.2.3"}, True),
        ({"host": "127.0.0.1"}, False),
        ({"host": "::1"}, False),
        ({"host": "0.0.0.0", "api_keys": ["a-good-key-123"]}, False),
        ({"host": "0.0.0.0", "keys": [{"key": "a-good-key-123"}]}, False),
        ({"host": "0.0.0.0", "allow_unauthenticated": True}, False),
    ],
)
def test_a_keyless_gateway_beyond_loopback_is_refused_unless_asked_for(
    gateway: dict[str, object], refused: bool
) -> None:
    from deployments.profile import GatewaySpec

    spec = GatewaySpec.model_validate(gateway)
    if refused:
        with pytest.raises(ProfileError, match=r"no API key is set: set TIERGATE_API_KEYS"):
            spec.check_exposure()
    else:
        spec.check_exposure()
