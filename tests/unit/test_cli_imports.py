"""The CLI's front door stays fast: `--version`, `--help` and `plan` import no heavy dependency."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Each of these costs from a few hundred milliseconds (fastapi) to seconds (skops, sklearn, ray, vllm).
HEAVY = ("skops", "sklearn", "scipy", "numpy", "fastapi", "starlette", "uvicorn", "aiohttp", "ray", "vllm", "torch")

_PROBE = """
import json, sys
sys.argv = ["tiergate", *json.loads(sys.argv[1])]
from gateway.cli import app
try:
    app()
except SystemExit:
    pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})), file=sys.stderr)
"""


def _top_level_modules_after(args: list[str]) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args)], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return set(loaded)


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["--help"],
        ["plan", "--model", "llama-2-7b", "--gpu", "a10", "--json"],
        ["key", "hash", "sk-some-key-0123"],
    ],
    ids=["version", "help", "plan", "key-hash"],
)
def test_front_door_commands_import_no_heavy_dependency(args: list[str]) -> None:
    loaded = _top_level_modules_after(args)
    assert "gateway" in loaded  # the probe did run the CLI
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
