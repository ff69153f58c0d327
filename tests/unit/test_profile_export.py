"""`tiergate profile export`: a profile for a ConfigMap, keys never in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from deployments.profile import PROFILES_DIR, load_profile, parse_profile
from deployments.profile_export import export_profile
from gateway.cli import app

runner = CliRunner()
API_KEY, ADMIN_KEY = "in-file-key-0001", "in-file-admin-key-0001"


def _with_keys(tmp_path: Path) -> Path:
    data: dict[str, Any] = yaml.safe_load((PROFILES_DIR / "test-fake.yaml").read_text(encoding="utf-8"))
    data.setdefault("gateway", {}).update({"api_keys": [API_KEY], "admin_key": ADMIN_KEY})
    path = tmp_path / "with-keys.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_export_leaves_every_key_out_and_keeps_the_rest(tmp_path: Path) -> None:
    path = _with_keys(tmp_path)
    text, dropped = export_profile(str(path))
    assert API_KEY not in text and ADMIN_KEY not in text
    assert dropped == ["gateway.api_keys", "gateway.admin_key"]
    exported = parse_profile(yaml.safe_load(text))
    original = load_profile(str(path), apply_env=False)
    assert exported.tiers == original.tiers and exported.routing == original.routing
    assert not exported.gateway.api_keys and exported.gateway.admin_key is None


def test_export_writes_only_what_the_file_sets() -> None:
    text, dropped = export_profile("gpu-h100")
    data = yaml.safe_load(text)
    assert dropped == []
    assert "request_timeout_s" not in data["gateway"]  # a default stays a default
    assert data["routing"]["thresholds"] == load_profile("gpu-h100", apply_env=False).routing.thresholds


def test_export_never_writes_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIERGATE_API_KEYS", "env-key-000111")
    monkeypatch.setenv("TIERGATE_ADMIN_KEY", "env-admin-key-000111")
    out = tmp_path / "profile.yaml"
    result = runner.invoke(app, ["profile", "export", str(_with_keys(tmp_path)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert "env-key-000111" not in text and "env-admin-key" not in text and API_KEY not in text
    assert "gateway.api_keys left out" in result.output
    parse_profile(yaml.safe_load(text))


def test_export_of_a_bad_profile_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("tiers:\n  - name: small\n    endpoint: http://x/v1\n", encoding="utf-8")
    result = runner.invoke(app, ["profile", "export", str(path)])
    assert result.exit_code == 2
    assert "tiers.0.upstream_model" in result.output
