"""What one gateway process is built from, and the one channel that hands it to uvicorn workers.

`create_app(settings)` takes a `GatewaySettings`. `tiergate serve` resolves everything in its own
process (the profile file or the --upstream list, TIERGATE_* overrides, the log level), then puts
the whole object, serialized as JSON, into one environment variable, `TIERGATE_SETTINGS`;
uvicorn's worker factory (`gateway.app:app_from_env`) reads it back and validates it again. No
other environment variable reaches the gateway's code, but for prometheus-client's own
`PROMETHEUS_MULTIPROC_DIR` (the folder where the workers' metrics meet; gateway/metrics.py).

The JSON carries the API keys in clear, as the profile file does: the environment of a process is
readable by its own user only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployments.profile import Profile, dump_with_secrets
from router.errors import ConfigError

SETTINGS_ENV = "TIERGATE_SETTINGS"


class GatewaySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: Profile = Field(description="The fleet, routing policy and gateway section, overrides applied.")
    log_level: Literal["debug", "info", "warning", "error"] | None = Field(
        default=None,
        description="When set, the worker configures logging (plain lines + batched access log) at this level; "
        "None leaves logging to the application that embeds the gateway.",
    )
    probe_interval_s: float = Field(default=5.0, gt=0.0, description="Seconds between tier probes once all are ready.")
    profile_path: str | None = Field(
        default=None, description="The profile file; its routing section is re-read when it changes on disk."
    )
    policy_override_path: str | None = Field(
        default=None,
        description="File where PUT /admin/policy leaves the new routing section for the sibling workers.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        description=(
            "Gateway processes serving together: each enforces 1/workers of every key limit and admits against"
            " 1/(workers x gateway.replicas) of every tier's KV budget."
        ),
    )
    handle_signals: bool = Field(
        default=False,
        description="Take SIGTERM/SIGINT ahead of uvicorn to drain first (gateway.drain); `tiergate serve` sets it.",
    )

    def to_env(self) -> dict[str, str]:
        """The environment entry that hands these settings to a worker process."""
        data = self.model_dump(mode="json")
        # JSON mode masks secrets; the worker needs the real keys.
        data["profile"] = dump_with_secrets(self.profile)
        return {SETTINGS_ENV: orjson.dumps(data).decode()}

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GatewaySettings:
        """Settings written by `to_env`; raises ConfigError when absent or invalid."""
        raw = environ.get(SETTINGS_ENV)
        if not raw:
            raise ConfigError(
                f"{SETTINGS_ENV} is not set: gateway.app:app_from_env is the worker factory of `tiergate serve`; "
                "embed the gateway with gateway.app.create_app(GatewaySettings(...)) instead"
            )
        try:
            return cls.model_validate_json(raw)
        except ValidationError as err:
            raise ConfigError(f"{SETTINGS_ENV} does not hold valid gateway settings: {err}") from None
