"""The root of tiergate's exception tree, and its branches.

It lives at the bottom layer so every package can subclass it without importing upward. The
whole tree, with where each leaf is defined:

    TiergateError                    every error tiergate raises on purpose
    ├── ConfigError (ValueError)     an input that cannot be used; names the bad field or value
    │   │                            (raised as is by router.capacity for out-of-range plan inputs)
    │   ├── ArchitectureError        router.capacity.architectures
    │   ├── DTypeError               router.capacity.dtypes
    │   ├── GPUError                 router.capacity.hardware
    │   ├── VllmVersionError         router.capacity.vllm_versions
    │   ├── CalibrationError         router.capacity.calibration
    │   ├── ArtifactError            router.runtime.artifact
    │   ├── ProfileError             deployments.spec (read from deployments.profile)
    │   ├── TierPlanningError        deployments.planning
    │   └── ServeBuildError          deployments.app
    ├── LaunchError (RuntimeError)   the local stack could not be prepared or started
    │   │                            (raised as is by deployments.launcher)
    │   ├── ModelPrepareError        deployments.model
    │   └── AlreadyRunningError      deployments.processes
    └── GatewayError                 one HTTP answer each (status, OpenAI error type, code)
        └── the HTTP leaves          gateway.errors (InvalidRequest, NotFound, UpstreamFailed, ...)

Catch `ConfigError` where a command reports a bad input in one line; never catch bare
`ValueError` to mean "a tiergate input was wrong".
"""

from __future__ import annotations


class TiergateError(Exception):
    """Root of every error tiergate raises on purpose."""


class ConfigError(TiergateError, ValueError):
    """A profile, artifact, model architecture, dtype or GPU that cannot be used as given."""


class LaunchError(TiergateError, RuntimeError):
    """The local stack (model preparation, Ray Serve, the gateway process) could not start."""


class GatewayError(TiergateError):
    """Base of the gateway's HTTP errors; each leaf maps to one status and OpenAI error type."""
