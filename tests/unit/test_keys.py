"""Stored keys: hashes and clear keys name the same key, bad settings are one line naming the field."""

from __future__ import annotations

import pytest

from deployments.keys import digest_of, hash_key, id_of_digest, key_id, key_rule_violation
from deployments.profile import ProfileError, dump_with_secrets, load_profile, parse_profile, with_env_overrides
from gateway.access import stored_keys
from gateway.settings import GatewaySettings

TIER = {"name": "a", "endpoint": "http://127.0.0.1:9/v1", "upstream_model": "a"}
KEY = "sk-clear-key-0001"


def test_a_key_and_its_hash_have_one_digest_and_one_id() -> None:
    hashed = hash_key(KEY)
    assert hashed.startswith("sha256:") and len(hashed) == 7 + 64
    assert digest_of(hashed) == digest_of(KEY)
    assert id_of_digest(digest_of(hashed)) == key_id(KEY)
    assert digest_of(hashed.upper().replace("SHA256:", "sha256:")) == digest_of(KEY)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("short", "at least 8 characters, this one has 5"),
        ("has space inside", "visible ASCII"),
        ("comma,inside-key", "no spaces or commas"),
        ("ключ-ключ-ключ", "visible ASCII"),
        ("sha256:abcd", "64 hex digits"),
        ("sha256:" + "z" * 64, "64 hex digits"),
    ],
)
def test_key_rules_say_what_is_wrong_without_quoting_the_key(entry: str, fragment: str) -> None:
    reason = key_rule_violation(entry)
    assert reason is not None and fragment in reason
    assert entry not in reason


def test_good_entries_pass() -> None:
    assert key_rule_violation(KEY) is None
    assert key_rule_violation(hash_key("x")) is None  # a hash says nothing of the key's length


def test_a_bad_key_in_a_profile_is_one_line_with_its_dotted_path() -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile({"tiers": [TIER], "gateway": {"keys": [{"key": KEY}, {"key": "sha256:12"}]}}, "p.yaml")
    assert str(info.value) == (
        "p.yaml: gateway.keys.1.key: a hashed key is 'sha256:' followed by 64 hex digits"
        " (make one with `tiergate key hash`)"
    )


@pytest.mark.parametrize(
    ("gateway", "fragment"),
    [
        ({"api_keys": [KEY], "keys": [{"key": hash_key(KEY)}]}, "keys.0.key is the same key as api_keys.0"),
        ({"api_keys": [hash_key("admin-key-0123456789")], "admin_key": "admin-key-0123456789"}, "must differ"),
        ({"keys": [{"key": KEY, "team": "nobody"}]}, "unknown team 'nobody'"),
    ],
)
def test_keys_that_contradict_each_other_are_refused(gateway: dict[str, object], fragment: str) -> None:
    with pytest.raises(ProfileError, match=fragment):
        parse_profile({"tiers": [TIER], "gateway": gateway})


def test_env_keys_may_be_hashes_and_errors_name_the_variable_in_one_line() -> None:
    profile = parse_profile({"tiers": [TIER]})
    swapped = with_env_overrides(profile, {"TIERGATE_API_KEYS": f"{KEY}, {hash_key('sk-other-key-0002')},"})
    assert [k.id for k in stored_keys(swapped.gateway)] == [key_id(KEY), key_id("sk-other-key-0002")]
    for env, message in [
        ({"TIERGATE_API_KEYS": "ok-key-123456,tiny"}, "TIERGATE_API_KEYS: entry 2: a key needs at least 8"),
        ({"TIERGATE_API_KEYS": ""}, "TIERGATE_API_KEYS is set but holds no key"),
        ({"TIERGATE_ADMIN_KEY": "sha256:00"}, "TIERGATE_ADMIN_KEY: a hashed key is"),
        ({"TIERGATE_API_KEYS": KEY, "TIERGATE_ADMIN_KEY": hash_key(KEY)}, "TIERGATE_ADMIN_KEY: admin_key must differ"),
    ]:
        with pytest.raises(ProfileError) as info:
            with_env_overrides(profile, env)
        assert str(info.value).startswith(message), str(info.value)
        assert "\n" not in str(info.value)


def test_every_secret_reaches_a_worker_and_none_shows_in_a_plain_dump() -> None:
    profile = with_env_overrides(
        load_profile("test-fake", apply_env=False), {"TIERGATE_ADMIN_KEY": hash_key("admin-key-0123456789")}
    )
    data = profile.model_dump(mode="json")
    data["gateway"].update(keys=[{"key": KEY, "team": "t", "budget_usd": 1.0}], teams={"t": {"budget_usd": 2.0}})
    data["gateway"]["api_keys"] = [hash_key("sk-other-key-0002")]
    data["gateway"]["admin_key"] = hash_key("admin-key-0123456789")
    keyed = parse_profile(data)
    assert KEY not in str(keyed.model_dump(mode="json"))
    revealed = dump_with_secrets(keyed)
    assert revealed["gateway"]["keys"][0]["key"] == KEY
    settings = GatewaySettings(profile=keyed, workers=2)
    assert GatewaySettings.from_env(settings.to_env()) == settings


def test_the_key_command_prints_a_hash_the_gateway_accepts_and_refuses_bad_keys() -> None:
    from typer.testing import CliRunner

    from gateway.cli import app

    runner = CliRunner()
    from_arg = runner.invoke(app, ["key", "hash", KEY])
    from_stdin = runner.invoke(app, ["key", "hash"], input=KEY + "\n")
    assert from_arg.exit_code == from_stdin.exit_code == 0
    assert from_arg.stdout.strip() == from_stdin.stdout.strip() == hash_key(KEY)
    assert key_rule_violation(from_arg.stdout.strip()) is None
    for args, message in [
        (["key", "hash", "tiny"], "at least 8 characters"),
        (["key", "hash", "--admin", "only-12-char"], "at least 16 characters"),
        (["key", "hash", hash_key(KEY)], "already a hash"),
    ]:
        refused = runner.invoke(app, args)
        assert refused.exit_code == 2 and message in refused.output
    made = runner.invoke(app, ["key", "new"]).stdout.splitlines()
    key, hashed = made[0].split()[1], made[1].split()[1]
    assert hashed == hash_key(key) and key_rule_violation(key) is None
