"""The profile's `gateway` section: where it listens, its keys and their limits, its resilience.

Split from deployments/profile.py (the whole profile) by job; `deployments.profile` re-exports the
names other modules read.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, model_validator

from deployments.keys import MIN_ADMIN_KEY_CHARS, digest_of, id_of_digest, key_rule_violation
from deployments.spec import LOOPBACK_HOSTS, ProfileError, StrictSpec


def _api_key(value: SecretStr) -> SecretStr:
    reason = key_rule_violation(value.get_secret_value())
    if reason is not None:
        raise ValueError(reason)
    return value


def _admin_key(value: SecretStr) -> SecretStr:
    reason = key_rule_violation(value.get_secret_value(), min_chars=MIN_ADMIN_KEY_CHARS)
    if reason is not None:
        raise ValueError(reason)
    return value


# A key in clear or its hash, `sha256:<64 hex digits>` (deployments.keys); checked where it is read.
ApiKey = Annotated[SecretStr, AfterValidator(_api_key)]
AdminKey = Annotated[SecretStr, AfterValidator(_admin_key)]


class KeyLimitsSpec(StrictSpec):
    """What one key may use. Enforced per gateway process: see docs/access.md for N workers."""

    requests_per_minute: int | None = Field(
        default=None, ge=1, description="Chat requests a minute (token bucket refilled continuously); None: no limit."
    )
    tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Prompt + completion tokens a minute, charged when a request ends; a request is admitted while the"
            " key's bucket is not empty. None: no limit."
        ),
    )
    budget_usd: float | None = Field(
        default=None, gt=0.0, description="USD the key may spend per budget_period_s (cost model); None: no budget."
    )


class KeySpec(KeyLimitsSpec):
    """One API key with its own limits; limits left out fall back to gateway.key_limits."""

    key: ApiKey = Field(description="The key in clear or its hash 'sha256:<64 hex digits>' (`tiergate key hash`).")
    team: str | None = Field(
        default=None, description="A team under gateway.teams whose budget this key also draws on."
    )


class TeamSpec(StrictSpec):
    budget_usd: float = Field(gt=0.0, description="USD the team's keys may spend together per budget_period_s.")


class ResilienceSpec(StrictSpec):
    """Retries, fallback and the per-tier circuit breaker (docs/faults.md)."""

    max_retries: int = Field(
        default=2, ge=0, le=10, description="Retries of one tier call on a connect error, 429, 5xx or timeout."
    )
    retry_base_delay_ms: float = Field(
        default=50.0, ge=0.0, description="Backoff before the first retry; doubles per retry, with jitter."
    )
    retry_max_delay_ms: float = Field(default=2000.0, ge=0.0, description="Longest backoff between two tries.")
    try_timeout_s: float | None = Field(
        default=None,
        gt=0.0,
        description=(
            "Per-try bound: an unstreamed answer, or a stream's first event. None: each try may use what is"
            " left of gateway.request_timeout_s."
        ),
    )
    fallback: bool = Field(
        default=True,
        description="model=auto: a tier that still fails after its retries hands the request to the next healthy tier.",
    )
    breaker_enabled: bool = Field(default=True, description="Open a tier's breaker when it keeps failing.")
    breaker_failure_rate: float = Field(
        default=0.5, gt=0.0, le=1.0, description="Share of failed calls in the window that opens the breaker."
    )
    breaker_min_calls: int = Field(default=10, ge=1, description="Calls in the window before the rate counts.")
    breaker_window_s: float = Field(default=30.0, gt=0.0, description="How far back calls are counted.")
    breaker_open_s: float = Field(
        default=10.0, gt=0.0, description="Time an open breaker refuses calls before one probe."
    )

    @model_validator(mode="after")
    def _delays_ordered(self) -> ResilienceSpec:
        if self.retry_max_delay_ms < self.retry_base_delay_ms:
            raise ValueError("retry_max_delay_ms must be at least retry_base_delay_ms")
        return self


class GatewaySpec(StrictSpec):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    api_keys: list[ApiKey] = Field(
        default_factory=list,
        description=(
            "Bearer keys in clear or as 'sha256:<hex>' hashes, under gateway.key_limits; or TIERGATE_API_KEYS."
            " With no key here nor in `keys`, there is no auth (loopback only)."
        ),
    )
    keys: list[KeySpec] = Field(default_factory=list, description="Bearer keys with their own limits and team.")
    teams: dict[str, TeamSpec] = Field(default_factory=dict, description="Team budgets, by team name.")
    key_limits: KeyLimitsSpec = Field(
        default_factory=KeyLimitsSpec, description="Limits of every key that does not set its own."
    )
    budget_period_s: int = Field(
        default=86400,
        ge=60,
        description="Length of a budget window in seconds, windows aligned to the Unix epoch (86400: UTC days).",
    )
    admin_key: AdminKey | None = Field(
        default=None,
        description=(
            "Bearer key for /admin/* (route preview, policy read and change), or TIERGATE_ADMIN_KEY; at least"
            " 16 characters, or its 'sha256:<hex>' hash. None: the admin routes are refused."
        ),
    )
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    request_timeout_s: float = Field(default=120.0, gt=0.0)
    connect_timeout_s: float = Field(default=5.0, gt=0.0)
    upstream_pool_size: int = Field(default=512, ge=1)
    admission_max_queue: int = Field(default=64, ge=0, description="Requests that may wait per tier.")
    admission_queue_timeout_s: float = Field(default=5.0, gt=0.0, description="Longest wait before a 503.")
    realtime_max_seqs: int = Field(
        default=4, ge=1, description="Batch target for realtime callers (docs/strategy.md: at most 4 under 100 ms)."
    )
    replicas: int = Field(
        default=1,
        ge=1,
        description=(
            "Gateway replicas in front of the same tiers (k8s Deployment replicas; with an HPA, its maxReplicas)."
            " Each process admits against budget / (replicas x serve --workers) of every tier's KV budget."
        ),
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True
    drain_period_s: float = Field(
        default=10.0,
        ge=0.0,
        le=3600.0,
        description=(
            "On SIGTERM/SIGINT `tiergate serve` keeps serving this long with /readyz at 503 ('draining'), then stops"
            " and aborts what is left; it stops sooner once nothing is in flight, unless drain_wait_full_period."
        ),
    )
    drain_wait_full_period: bool = Field(
        default=False,
        description="Hold the whole drain period even when idle (behind a load balancer that needs time to notice).",
    )
    resilience: ResilienceSpec = Field(default_factory=ResilienceSpec)
    allow_unauthenticated: bool = Field(
        default=False,
        description=(
            "Serve with no API key on a host other than loopback (e.g. behind an authenticating proxy)."
            " Off: `tiergate serve` and `tiergate up` refuse to start that way."
        ),
    )

    @property
    def has_keys(self) -> bool:
        """Whether any API key is configured, i.e. whether the API needs one."""
        return bool(self.api_keys or self.keys)

    def check_exposure(self) -> None:
        """Refuse, in one line, to serve every route openly to other machines by accident.

        A gateway with no key is open to whoever reaches it: fine on loopback, a leak of paid
        capacity beyond it. Checked at start-up, after the environment's keys are applied (a
        profile file may leave the keys to a Secret), so it is not a validation rule of the file.
        """
        if self.has_keys or self.allow_unauthenticated or self.host in LOOPBACK_HOSTS:
            return
        raise ProfileError(
            f"gateway.host is {self.host} but no API key is set: set TIERGATE_API_KEYS (or gateway.api_keys /"
            " gateway.keys), or gateway.allow_unauthenticated: true to serve openly on purpose"
        )

    @model_validator(mode="after")
    def _keys_consistent(self) -> GatewaySpec:
        seen: dict[bytes, str] = {}
        stored = [(f"api_keys.{i}", k) for i, k in enumerate(self.api_keys)]
        stored += [(f"keys.{i}.key", k.key) for i, k in enumerate(self.keys)]
        for where, key in stored:
            digest = digest_of(key.get_secret_value())
            # Two keys sharing an id would share a rate limit and a metric label.
            clash = next((w for d, w in seen.items() if id_of_digest(d) == id_of_digest(digest)), None)
            if clash is not None:
                raise ValueError(f"{where} is the same key as {clash} (or shares its id); give each key once")
            seen[digest] = where
        if self.admin_key is not None and digest_of(self.admin_key.get_secret_value()) in seen:
            raise ValueError("admin_key must differ from every API key")
        for i, spec in enumerate(self.keys):
            if spec.team is not None and spec.team not in self.teams:
                known = ", ".join(sorted(self.teams)) or "none"
                raise ValueError(f"keys.{i}.team names unknown team {spec.team!r} (gateway.teams: {known})")
        return self
