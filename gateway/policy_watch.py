"""Routing policy changes at run time: from the profile file on disk and from `PUT /admin/policy`.

Only the `routing` section changes live (thresholds, cascade, latency classes, scorer artifact);
tiers and gateway settings need a restart, since connections, admission gates and the listening
socket are built from them.

Every worker of one `tiergate serve` must apply the same policy, though an admin request reaches
only one of them. So a PUT is applied by the worker that took it and written to the override file
named in the settings; every worker polls that file and the profile file, and applies whichever
changed last. In Kubernetes the ConfigMap mounted as the profile file is the shared store for all
replicas: an edit there reaches every pod; a PUT reaches the pod's own workers only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

from deployments.profile import ProfileError, RoutingSpec, load_profile
from gateway.background import stop_task

log = logging.getLogger("tiergate.policy")


def read_override(path: Path) -> RoutingSpec:
    return RoutingSpec.model_validate_json(path.read_bytes())


def write_override(path: Path, routing: RoutingSpec) -> None:
    """Atomically replace the override file (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".policy-", dir=path.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps(routing.model_dump(mode="json")))
    os.replace(tmp, path)


def _mtime(path: Path | None) -> float | None:
    if path is None:
        return None
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return None


class PolicyWatcher:
    """Polls the profile file and the override file; applies the routing of whichever changed."""

    def __init__(
        self,
        apply: Callable[[RoutingSpec], Awaitable[None]],
        *,
        profile_path: Path | None,
        override_path: Path | None,
        interval_s: float = 1.0,
    ) -> None:
        self._apply = apply
        self._profile_path = profile_path
        self._override_path = override_path
        self._interval_s = interval_s
        self._seen = {"profile": _mtime(profile_path), "override": _mtime(override_path)}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and (self._profile_path or self._override_path):
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def check(self) -> str | None:
        """Apply what changed since the last check; returns which file it was (for tests and logs)."""
        for name, path in (("profile", self._profile_path), ("override", self._override_path)):
            now = _mtime(path)
            if path is None or now is None or now == self._seen[name]:
                continue
            self._seen[name] = now
            try:
                routing = load_profile(str(path)).routing if name == "profile" else read_override(path)
                await self._apply(routing)
            except (ProfileError, ValueError, OSError) as err:
                # A half-edited ConfigMap must not take the gateway down: keep the last good policy.
                log.warning("routing policy in %s not applied: %s", path, err)
                continue
            log.info("routing policy reloaded from %s", path)
            return name
        return None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.check()
