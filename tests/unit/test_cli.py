from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway import __version__
from gateway.cli import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout


def test_profile_check_prints_the_resolved_profile_with_keys_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERGATE_API_KEYS", "secret-key-000111")
    result = runner.invoke(app, ["profile", "check", "test-fake"])
    assert result.exit_code == 0
    assert '"request_timeout_s": 2.0' in result.stdout
    assert "secret-key-000111" not in result.output and '"***"' in result.stdout


def test_profile_check_names_the_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("tiers:\n  - name: small\n    endpoint: http://x/v1\n")
    result = runner.invoke(app, ["profile", "check", str(path)])
    assert result.exit_code == 2
    assert "tiers.0.upstream_model" in result.output


def test_serve_refuses_both_or_neither_source() -> None:
    assert runner.invoke(app, ["serve"]).exit_code != 0
    assert runner.invoke(app, ["serve", "--profile", "x", "--upstream", "a=http://x/v1"]).exit_code != 0
    result = runner.invoke(app, ["serve", "--upstream", "no-url"])
    assert result.exit_code != 0 and "NAME=URL" in result.output


def test_help_explains_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    for command in ("serve", "fake-upstream", "profile"):
        assert command in result.stdout


def test_serve_with_workers_but_no_writable_temporary_folder_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    def read_only(prefix: str) -> str:
        raise OSError(30, "Read-only file system", f"/tmp/{prefix}x")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    monkeypatch.setenv("TIERGATE_SETTINGS", "")  # restored after, should serve get as far as setting it
    result = runner.invoke(app, ["serve", "--profile", "test-fake", "--workers", "2"])
    assert result.exit_code == 2
    assert result.output.startswith("error: --workers 2 needs a writable temporary folder"), result.output
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert os.environ["TIERGATE_SETTINGS"] == ""
