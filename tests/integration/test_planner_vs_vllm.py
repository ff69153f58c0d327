"""The planner's KV token capacity equals what a real vLLM-CPU engine allocates for the same budget.

vLLM's own numbers are read from the engine's cache config (block size, block count) by a child
process, `tests.integration.vllm_kv_probe`; no log line is parsed. One engine per KV dtype,
both built by one child process (about 2 minutes on two busy cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from router.capacity import CATALOGUE, from_hf_config
from router.capacity.params import count_params
from router.capacity.plan import kv_tokens_for_budget
from tests.integration.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

KV_BUDGET_GIB = 1


ENGINES = {"bfloat16": "bf16", "float32": "fp32"}  # engine dtype -> the KV dtype vLLM's 'auto' picks


@pytest.fixture(scope="module")
def vllm_kv_numbers(standin_model_dir: Path) -> dict[str, dict[str, object]]:
    """vLLM's block size and block count per engine dtype, from one child process."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(KV_BUDGET_GIB), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.vllm_kv_probe", str(standin_model_dir), *ENGINES],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    return {str(line["dtype"]): line for line in lines}


def test_converted_standin_config_sizes_like_the_catalogue(standin_model_dir: Path) -> None:
    config = json.loads((standin_model_dir / "config.json").read_text(encoding="utf-8"))
    assert count_params(from_hf_config(config)) == count_params(CATALOGUE["smollm2-135m"])


@pytest.mark.parametrize(("engine_dtype", "kv_dtype"), sorted(ENGINES.items()))
def test_kv_tokens_match_vllm_cpu_for_a_1gib_budget(
    vllm_kv_numbers: dict[str, dict[str, object]], engine_dtype: str, kv_dtype: str
) -> None:
    vllm = vllm_kv_numbers[engine_dtype]
    block_size = int(str(vllm["block_size"]))
    vllm_tokens = int(str(vllm["num_gpu_blocks"])) * block_size
    arch = CATALOGUE["smollm2-135m"]
    budget = KV_BUDGET_GIB * 2**30
    # Same block size as the engine: the same number, exactly.
    assert kv_tokens_for_budget(arch, kv_dtype, budget, block_size_tokens=block_size) == vllm_tokens
    # The planner's default block size: equal up to one engine block.
    assert abs(kv_tokens_for_budget(arch, kv_dtype, budget) - vllm_tokens) < block_size
    if kv_dtype == "bf16":
        assert vllm_tokens == 46_592  # what vLLM-CPU reported on this machine for 1 GiB of bf16 KV
