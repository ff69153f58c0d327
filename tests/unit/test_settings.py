from __future__ import annotations

import pytest

from deployments.profile import load_profile, with_env_overrides
from gateway.settings import SETTINGS_ENV, GatewaySettings
from router.errors import ConfigError


def test_settings_reach_a_worker_through_one_variable_with_their_secrets_intact() -> None:
    profile = with_env_overrides(
        load_profile("test-fake", apply_env=False),
        {"TIERGATE_API_KEYS": "key-0123456789", "TIERGATE_ADMIN_KEY": "admin-key-0123456789"},
    )
    settings = GatewaySettings(profile=profile, log_level="info", probe_interval_s=2.0)
    env = settings.to_env()
    assert list(env) == [SETTINGS_ENV]
    assert GatewaySettings.from_env(env) == settings


def test_a_worker_without_settings_says_how_to_start_the_gateway() -> None:
    with pytest.raises(ConfigError, match=SETTINGS_ENV):
        GatewaySettings.from_env({})
    with pytest.raises(ConfigError, match="not hold valid"):
        GatewaySettings.from_env({SETTINGS_ENV: '{"profile": {}}'})
