"""A profile mounted from a Kubernetes ConfigMap reloads its routing when the ConfigMap changes.

The kubelet writes a ConfigMap volume as `<mount>/..<timestamp>/<key>` files, points `..data` at
the current folder and exposes each key as `<mount>/<key> -> ..data/<key>`; an update writes a new
folder, swaps `..data` atomically and deletes the old folder. These tests build that layout on disk.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from deployments.profile import PROFILES_DIR, RoutingSpec
from gateway.policy_watch import PolicyWatcher
from gateway.settings import GatewaySettings


def _profile_text(thresholds: list[float]) -> str:
    data: dict[str, Any] = yaml.safe_load((PROFILES_DIR / "test-fake.yaml").read_text(encoding="utf-8"))
    data["routing"]["thresholds"] = thresholds
    return yaml.safe_dump(data)


def _publish(mount: Path, stamp: str, text: str) -> Path:
    """Write one ConfigMap revision the kubelet's way; returns the revision folder."""
    revision = mount / f"..{stamp}"
    revision.mkdir()
    (revision / "profile.yaml").write_text(text, encoding="utf-8")
    link = mount / "..data_tmp"
    link.symlink_to(revision.name)
    os.replace(link, mount / "..data")
    if not (mount / "profile.yaml").is_symlink():
        (mount / "profile.yaml").symlink_to("..data/profile.yaml")
    return revision


def test_a_configmap_update_reaches_the_watcher_through_its_symlinks(tmp_path: Path) -> None:
    old = _publish(tmp_path, "2026_11_28_10_00_00.1", _profile_text([0.2, 0.6]))
    past = time.time() - 60  # the first revision was written a minute before the update
    os.utime(old / "profile.yaml", (past, past))
    applied: list[RoutingSpec] = []

    async def apply(routing: RoutingSpec) -> None:
        applied.append(routing)

    watcher = PolicyWatcher(apply, profile_path=tmp_path / "profile.yaml", override_path=None)
    assert asyncio.run(watcher.check()) is None

    _publish(tmp_path, "2026_11_28_10_01_00.2", _profile_text([0.3, 0.7]))
    for path in old.iterdir():
        path.unlink()
    old.rmdir()

    assert asyncio.run(watcher.check()) == "profile"
    assert [r.thresholds for r in applied] == [[0.3, 0.7]]
    assert asyncio.run(watcher.check()) is None


def test_serve_watches_the_mounted_path_not_the_revision_it_points_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from gateway.cli import app

    _publish(tmp_path, "2026_11_28_10_00_00.1", _profile_text([0.2, 0.6]))
    # serve hands its settings (and anything else) to workers through the environment: give it a copy.
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)  # the server itself is not under test
    result = CliRunner().invoke(app, ["serve", "--profile", str(tmp_path / "profile.yaml")])
    assert result.exit_code == 0, result.output
    settings = GatewaySettings.from_env(os.environ)
    assert settings.profile_path == str(tmp_path / "profile.yaml")
