"""The profile: one YAML file describing the fleet, the routing policy and the gateway.

Both the gateway and deployments/ read it, so the schema lives here (deployments/ sits
below gateway/ and imports nothing upward). Every field is typed, documented and carries
its unit in its name; a bad file fails at load time with the dotted path of the bad field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

# The gateway section and the tier have modules of their own; these names are read from here by other modules.
from deployments.gateway_spec import GatewaySpec as GatewaySpec
from deployments.gateway_spec import KeyLimitsSpec as KeyLimitsSpec
from deployments.gateway_spec import ResilienceSpec as ResilienceSpec
from deployments.keys import MIN_ADMIN_KEY_CHARS, key_rule_violation
from deployments.spec import LOOPBACK_HOSTS as LOOPBACK_HOSTS
from deployments.spec import ProfileError as ProfileError
from deployments.spec import StrictSpec
from deployments.tier_spec import ServingSpec as ServingSpec
from deployments.tier_spec import TierSpec as TierSpec
from deployments.tier_spec import check_engines

# The latency classes are the policy's; re-exported by name for modules that read the schema.
from router.runtime.policy import LATENCY_CLASSES as LATENCY_CLASSES
from router.runtime.policy import LatencyClass as LatencyClass

PROFILES_DIR = Path(__file__).parent / "profiles"

StreamMode = Literal["buffer", "commit"]


class LatencyClassSpec(StrictSpec):
    ttft_budget_ms: float | None = Field(
        default=None,
        gt=0.0,
        description=(
            "Time until the caller has its first token (ms): for an answer sent whole, that is the whole answer."
            " x-tiergate-slo-ttft-ms overrides it per request; None: unbounded."
        ),
    )
    budget_ms: float | None = Field(
        default=None,
        gt=0.0,
        description="Total time of a request (ms); x-tiergate-slo-total-ms overrides it per request; None: unbounded.",
    )
    max_tier: str | None = Field(default=None, description="Largest tier this class may use; None means any.")
    stream_mode: StreamMode | None = Field(
        default=None,
        description=(
            "Streaming requests: 'buffer' runs the cascade on an unstreamed first answer, then streams the accepted"
            " one; 'commit' streams from the chosen tier with no cascade. None: routing.cascade.stream_mode_default"
            " (realtime always defaults to 'commit')."
        ),
    )


def _default_classes() -> dict[LatencyClass, LatencyClassSpec]:
    # docs/strategy.md's table: real-time < 100 ms, near real-time < 1 s, batch < 10 s, read as the
    # latency a caller feels: the wait for the first token (the whole answer when it is not streamed).
    return {
        "realtime": LatencyClassSpec(ttft_budget_ms=100.0, stream_mode="commit"),
        "interactive": LatencyClassSpec(ttft_budget_ms=1000.0),
        "batch": LatencyClassSpec(ttft_budget_ms=10000.0),
    }


class CascadeSpec(StrictSpec):
    """The live cascade: a cheaper tier answers first; a doubtful answer climbs the ladder."""

    enabled: bool = Field(
        default=False,
        description="Run the cascade for model=auto (needs routing.policy 'learned': its verifier judges answers).",
    )
    max_escalations: int = Field(default=2, ge=0, description="Most tiers climbed after the first answer.")
    stream_mode_default: StreamMode = Field(
        default="buffer", description="Streaming mode of classes that do not set their own stream_mode."
    )
    use_operating_point: bool = Field(
        default=True,
        description=(
            "Start the cascade at the artifact's pre-router thresholds (the operating point its evaluation chose)"
            " instead of routing.thresholds."
        ),
    )


class RoutingSpec(StrictSpec):
    policy: Literal["rule", "learned"] = Field(
        default="rule", description="'rule': docs/strategy.md's heuristic; 'learned': the trained scorer."
    )
    thresholds: list[float] | None = Field(
        default=None,
        description=(
            "One per tier but the last: a score below thresholds[i] is good enough for tier i."
            " Left out: docs/strategy.md's 0.3 / 0.7 for three tiers, evenly spaced otherwise."
        ),
    )
    default_latency_class: LatencyClass = "interactive"
    latency_classes: dict[LatencyClass, LatencyClassSpec] = Field(default_factory=_default_classes)
    scorer_artifact: str | None = Field(default=None, description="Path of a trained scorer artifact.")
    cascade: CascadeSpec = Field(default_factory=CascadeSpec)

    @model_validator(mode="after")
    def _check(self) -> RoutingSpec:
        if self.thresholds is not None:
            if any(not 0.0 <= t <= 1.0 for t in self.thresholds):
                raise ValueError("thresholds must lie in [0, 1]")
            if list(self.thresholds) != sorted(self.thresholds):
                raise ValueError("thresholds must be ascending (cheaper tiers take easier requests)")
        missing = [c for c in LATENCY_CLASSES if c not in self.latency_classes]
        if missing:
            raise ValueError(f"latency_classes is missing {missing}")
        if self.cascade.enabled and self.policy != "learned":
            raise ValueError("cascade.enabled needs policy 'learned' (the learned artifact's verifier judges answers)")
        return self

    def stream_mode(self, latency_class: LatencyClass) -> StreamMode:
        """How a streamed request of this class is served (see LatencyClassSpec.stream_mode)."""
        own = self.latency_classes[latency_class].stream_mode
        if own is not None:
            return own
        return "commit" if latency_class == "realtime" else self.cascade.stream_mode_default

    def thresholds_for(self, n_tiers: int) -> list[float]:
        if self.thresholds is not None:
            return list(self.thresholds)
        if n_tiers == 3:
            return [0.3, 0.7]
        return [round((i + 1) / n_tiers, 4) for i in range(n_tiers - 1)]


class Profile(StrictSpec):
    name: str = "unnamed"
    description: str = ""
    tiers: list[TierSpec] = Field(min_length=1)
    routing: RoutingSpec = Field(default_factory=RoutingSpec)
    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
    ray_serve_http_port: int = Field(default=8100, ge=1, le=65535)

    @model_validator(mode="after")
    def _check(self) -> Profile:
        names = [t.name for t in self.tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tier names must be unique, repeated: {dupes}")
        if "auto" in names:
            raise ValueError("'auto' is reserved for routing and cannot name a tier")
        given = self.routing.thresholds
        if given is not None and len(given) != len(self.tiers) - 1:
            # Padding or trimming would hide a mistake in a fleet that grew; say what is needed.
            raise ValueError(
                f"routing.thresholds needs {len(self.tiers) - 1} values for {len(self.tiers)} tiers, got {len(given)}"
            )
        check_engines(self.tiers)
        for cls, spec in self.routing.latency_classes.items():
            if spec.max_tier is not None and spec.max_tier not in names:
                raise ValueError(f"routing.latency_classes.{cls}.max_tier names unknown tier {spec.max_tier!r}")
        if self.gateway.port == self.ray_serve_http_port:
            raise ValueError("gateway.port and ray_serve_http_port must differ")
        return self

    def tier(self, name: str) -> TierSpec | None:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        return None


def _error_lines(err: ValidationError) -> list[tuple[str, str]]:
    """(dotted path, message) per error; pydantic's 'Value error, ' prefix dropped."""
    out = []
    for item in err.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(top level)"
        out.append((path, item["msg"].removeprefix("Value error, ")))
    return out


def _format_validation(err: ValidationError) -> str:
    return "\n".join(f"  {path}: {msg}" for path, msg in _error_lines(err))


def _invalid(source: str, err: ValidationError) -> str:
    """One line for one error (what a start-up failure should print), a list for several."""
    lines = _error_lines(err)
    if len(lines) == 1:
        path, msg = lines[0]
        return f"{source}: {path}: {msg}"
    return f"{source} is not a valid profile:\n{_format_validation(err)}"


def resolve_profile_path(name_or_path: str) -> Path:
    """A file path, or the name of a shipped profile ('local-cpu' -> profiles/local-cpu.yaml)."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    shipped = PROFILES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
    raise ProfileError(f"no profile file {name_or_path!r} and no shipped profile of that name (shipped: {known})")


def parse_profile(data: Any, source: str = "<profile>") -> Profile:
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a profile is a YAML mapping, got {type(data).__name__}")
    try:
        return Profile.model_validate(data)
    except ValidationError as err:
        raise ProfileError(_invalid(source, err)) from None


def load_profile(name_or_path: str, *, apply_env: bool = True, resolve_files: bool = True) -> Profile:
    """Load, validate and (optionally) apply TIERGATE_* environment overrides.

    `resolve_files`: relative file paths (a tier's `calibration_file`) become absolute, read from the
    profile's folder; False keeps them as written (a profile exported to run elsewhere).
    """
    path = resolve_profile_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ProfileError(f"{path.name}: not valid YAML: {err}") from None
    profile = parse_profile(data, path.name)
    if resolve_files:
        profile = _files_beside(profile, path.parent)
    return with_env_overrides(profile) if apply_env else profile


def _files_beside(profile: Profile, folder: Path) -> Profile:
    """Relative `calibration_file` paths read from the profile's own folder, made absolute so that a
    copy of the profile written elsewhere (the launcher's) still finds them."""
    tiers = [
        t.model_copy(update={"calibration_file": str((folder / t.calibration_file).resolve())})
        if t.calibration_file is not None and not Path(t.calibration_file).is_absolute()
        else t
        for t in profile.tiers
    ]
    return profile.model_copy(update={"tiers": tiers})


def with_env_overrides(profile: Profile, environ: Mapping[str, str] | None = None) -> Profile:
    """TIERGATE_API_KEYS (comma-separated) replaces gateway.api_keys and TIERGATE_ADMIN_KEY gateway.admin_key
    when set. A bad value is a ProfileError of one line naming the variable and the rule (never the key)."""
    env = os.environ if environ is None else environ
    profile = _with_serve_url(profile, env.get("TIERGATE_SERVE_URL"))
    raw, admin = env.get("TIERGATE_API_KEYS"), env.get("TIERGATE_ADMIN_KEY")
    if raw is None and admin is None:
        return profile
    gateway_data = profile.gateway.model_dump()
    if raw is not None:
        entries = [k.strip() for k in raw.split(",")]
        if not any(entries):
            # Set but empty would silently open every route: refuse, and say how to mean it.
            raise ProfileError("TIERGATE_API_KEYS is set but holds no key; unset it to serve without keys")
        for i, entry in enumerate(entries, start=1):
            reason = key_rule_violation(entry) if entry else None
            if reason is not None:
                raise ProfileError(f"TIERGATE_API_KEYS: entry {i}: {reason}")
        gateway_data["api_keys"] = [e for e in entries if e]
    if admin is not None:
        reason = key_rule_violation(admin.strip(), min_chars=MIN_ADMIN_KEY_CHARS)
        if reason is not None:
            raise ProfileError(f"TIERGATE_ADMIN_KEY: {reason.replace('a key', 'the admin key', 1)}")
        gateway_data["admin_key"] = admin.strip()
    try:
        gateway = GatewaySpec.model_validate(gateway_data)
    except ValidationError as err:
        variable = "TIERGATE_ADMIN_KEY" if admin is not None else "TIERGATE_API_KEYS"
        raise ProfileError(f"{variable}: {_error_lines(err)[0][1]}") from None
    return profile.model_copy(update={"gateway": gateway})


def dump_with_secrets(profile: Profile, *, exclude_none: bool = False) -> dict[str, Any]:
    """The profile as JSON-ready data with its keys written out (a plain dump masks them).

    For the one channel that hands the profile to a gateway process (gateway.settings) and the
    profile file `tiergate up` writes for its gateway (mode 0600).
    """
    data = profile.model_dump(mode="json", exclude_none=exclude_none)
    gw, out = profile.gateway, data["gateway"]
    out["api_keys"] = [k.get_secret_value() for k in gw.api_keys]
    for spec, entry in zip(gw.keys, out["keys"], strict=True):
        entry["key"] = spec.key.get_secret_value()
    if gw.admin_key is not None:
        out["admin_key"] = gw.admin_key.get_secret_value()
    return data


def _with_serve_url(profile: Profile, serve_url: str | None) -> Profile:
    """TIERGATE_SERVE_URL moves tiers served by the profile's own Ray Serve to another address.

    The same profile then runs on one machine (Serve on 127.0.0.1:<ray_serve_http_port>) and in a
    cluster, where the gateway reaches Serve through a Kubernetes Service.
    """
    if not serve_url:
        return profile
    if not serve_url.startswith(("http://", "https://")):
        raise ProfileError("TIERGATE_SERVE_URL must be an http(s) URL, e.g. http://tiergate-serve-svc:8100")
    local = f"http://127.0.0.1:{profile.ray_serve_http_port}"
    tiers = [
        t.model_copy(update={"endpoint": serve_url.rstrip("/") + t.endpoint[len(local) :]})
        if t.endpoint.startswith(local)
        else t
        for t in profile.tiers
    ]
    return profile.model_copy(update={"tiers": tiers})


def profile_from_upstreams(upstreams: list[tuple[str, str]], *, host: str, port: int) -> Profile:
    """A profile for `serve --upstream NAME=URL ...`: one tier per base URL, cheapest first."""
    tiers = [{"name": name, "endpoint": url, "upstream_model": name} for name, url in upstreams]
    data = {
        "name": "upstreams",
        "tiers": tiers,
        "gateway": {"host": host, "port": port},
        "ray_serve_http_port": 8100 if port != 8100 else 8101,
    }
    return parse_profile(data, "--upstream")
