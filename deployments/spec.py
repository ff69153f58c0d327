"""What every section of a profile shares: strict, frozen models, its error, the loopback hosts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from router.errors import ConfigError

# Hosts only this machine reaches: a gateway bound to one of them may run without keys.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class StrictSpec(BaseModel):
    # Unknown keys are typos more often than not; refuse them so they do not go unnoticed.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileError(ConfigError):
    """A profile that cannot be read or does not validate; the message names the field."""
