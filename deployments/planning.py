"""Engine limits for each served tier, derived from the capacity planner (router.capacity).

For a tier with a `serving` section this gives vLLM's `tensor_parallel_size`, `max_model_len`,
`max_num_seqs` and `gpu_memory_utilization`, and the KV tokens one replica holds (what the
gateway's admission control bounds in-flight tokens by, times the replicas). Values the profile
gives are kept and checked; absent ones are derived. A tier that cannot fit is refused with the
numbers, before any engine starts.

Rules:
- max_model_len: `serving.max_model_len_tokens`, else the tier's `context_length_tokens`; never
  more than the architecture's maximum.
- TP (GPU): the given degree, checked; else the smallest power of two (within one node) whose
  KV pool holds `min_full_context_seqs` sequences of max_model_len after weights and reserve.
- max_num_seqs: given, else as many sequences of `typical_sequence_tokens` (default 4,096, or
  max_model_len if shorter) as the KV pool holds, at least 1 and at most vLLM's default 256.
  Sizing by full-context sequences instead would give 3 for Llama-3.3-70B at 131K on TP=4; the
  gateway's admission control bounds the real in-flight token sum by the KV capacity, so this
  only caps the batch width.
- CPU (vLLM-CPU): the KV pool is `serving.kv_cache_space_gib` (VLLM_CPU_KVCACHE_SPACE), required.
- Calibration: the tier's `calibration_file` (a fleet's fitted reserve terms) replaces the vLLM
  version's non-torch and communication-buffer terms when the KV pool is sized.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from router.capacity import memory as mem
from router.capacity.architectures import (
    CATALOGUE,
    Architecture,
    ArchitectureError,
    catalogue_architecture,
    from_hf_config,
)
from router.capacity.dtypes import DTypeError, kv_dtype, weight_dtype
from router.capacity.hardware import GPUError, gpu
from router.capacity.params import count_params
from router.capacity.plan import PlanInputs, capacity, min_gpus
from router.errors import ConfigError

if TYPE_CHECKING:
    # Annotations only: `tiergate plan` imports load_architecture without pydantic or the profile.
    from deployments.profile import ServingSpec, TierSpec
    from router.capacity.calibration import Calibration

TYPICAL_SEQUENCE_TOKENS = 4096

_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "auto": "bf16"}
# vLLM quantization methods -> the planner's weight format.
_QUANTIZATION = {
    "fp8": "fp8",
    "int8": "int8",
    "w8a8": "int8",
    "awq": "int4",
    "awq_marlin": "int4",
    "gptq": "int4",
    "gptq_marlin": "int4",
    "int4": "int4",
}
_KV_CACHE_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "fp8": "fp8", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8"}


class TierPlanningError(ConfigError):
    """A tier whose engine cannot be planned or cannot fit; the message carries the numbers."""


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """vLLM engine arguments for one replica of a tier, and what they hold."""

    tier: str
    accelerator: str
    tensor_parallel_size: int
    max_model_len: int
    max_num_seqs: int
    gpu_memory_utilization: float | None  # None on CPU
    kv_cache_space_gib: float | None  # the CPU KV pool; None on GPU
    kv_tokens_capacity: int  # per replica
    weights_bytes: int
    weight_dtype: str
    kv_dtype: str


def load_architecture(name_or_path: str) -> Architecture:
    """A catalogue key, a config.json file, or a folder holding config.json.

    The one lookup behind a profile's `serving.architecture` and `tiergate plan --model`. It lives
    here, not in router.capacity, because it reads a file and the planner stays pure.
    Raises ArchitectureError naming the input, the catalogue or the bad config key.
    """
    if name_or_path.lower() in CATALOGUE:
        return catalogue_architecture(name_or_path)
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ArchitectureError(
            f"unknown model {name_or_path!r}; catalogue: {', '.join(CATALOGUE)}, or a config.json path"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArchitectureError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise ArchitectureError(f"{path} is not a JSON object")
    return from_hf_config(data, name=path.parent.name or path.stem)


def load_calibration(path: str | Path) -> Calibration:
    """A calibration file (`tiergate plan --calibrate ... --calibration-out FILE`).

    The one reader behind a tier's `calibration_file` and `tiergate plan --calibration`; it lives
    here because it reads a file. Raises CalibrationError naming the file.
    """
    # Imported here: `tiergate plan --help` loads this module and needs none of the fitting code.
    from router.capacity.calibration import Calibration, CalibrationError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CalibrationError(f"cannot read calibration {str(path)!r}: {err}") from None
    try:
        return Calibration.from_json(text)
    except CalibrationError as err:
        raise CalibrationError(f"calibration {str(path)!r}: {err}") from None


def tier_calibration(tier: TierSpec) -> Calibration | None:
    """The tier's `calibration_file`, read; None when it names none."""
    return None if tier.calibration_file is None else load_calibration(tier.calibration_file)


def architecture_for(serving: ServingSpec) -> Architecture:
    """The tier's architecture (`serving.architecture`, see `load_architecture`)."""
    name = serving.architecture
    if name is None:
        raise TierPlanningError(
            f"serving.architecture is not set; give a catalogue key ({', '.join(CATALOGUE)}) or a config.json"
        )
    try:
        return load_architecture(name)
    except ArchitectureError as err:
        raise TierPlanningError(f"serving.architecture: {err}") from None


def weight_dtype_key(serving: ServingSpec) -> str:
    """The planner's weight format for the tier's dtype and quantization."""
    if serving.quantization is None:
        return _DTYPES[serving.dtype]
    try:
        return _QUANTIZATION[serving.quantization.lower()]
    except KeyError:
        raise TierPlanningError(
            f"serving.quantization {serving.quantization!r} is not modelled; known: {', '.join(_QUANTIZATION)}"
        ) from None


def kv_dtype_key(serving: ServingSpec) -> str:
    """The KV cache format: engine_kwargs.kv_cache_dtype, else vLLM's 'auto' (the model's dtype)."""
    requested = str(serving.engine_kwargs.get("kv_cache_dtype", "auto"))
    if requested == "auto":
        return "fp32" if serving.dtype == "float32" else "bf16"
    try:
        return _KV_CACHE_DTYPES[requested]
    except KeyError:
        raise TierPlanningError(f"engine_kwargs.kv_cache_dtype {requested!r} is not modelled") from None


def _max_model_len(tier: TierSpec, serving: ServingSpec, arch: Architecture) -> int:
    length = serving.max_model_len_tokens or tier.context_length_tokens
    if length > arch.max_context_tokens:
        raise TierPlanningError(
            f"tier {tier.name!r}: max_model_len {length:,} exceeds {arch.name}'s maximum context"
            f" of {arch.max_context_tokens:,} tokens"
        )
    return length


def _max_num_seqs(serving: ServingSpec, kv_tokens: int, max_model_len: int, typical_tokens: int) -> int:
    if serving.max_num_seqs is not None:
        return serving.max_num_seqs
    per_seq = min(typical_tokens, max_model_len)
    return max(1, min(mem.VLLM_DEFAULT_MAX_NUM_SEQS, kv_tokens // per_seq))


def derive_engine_limits(
    tier: TierSpec,
    *,
    min_full_context_seqs: int = 1,
    typical_sequence_tokens: int = TYPICAL_SEQUENCE_TOKENS,
) -> EngineLimits:
    """Engine limits for `tier`; raises TierPlanningError when it cannot be planned or cannot fit."""
    serving = tier.serving
    if serving is None:
        raise TierPlanningError(f"tier {tier.name!r} has no serving section: it is an external endpoint")
    if min_full_context_seqs < 1 or typical_sequence_tokens < 1:
        raise ValueError("min_full_context_seqs and typical_sequence_tokens must be >= 1")
    try:
        arch = architecture_for(serving)
        weights = weight_dtype(weight_dtype_key(serving))
        kv = kv_dtype(kv_dtype_key(serving))
    except (ArchitectureError, DTypeError) as err:
        raise TierPlanningError(f"tier {tier.name!r}: {err}") from None
    length = _max_model_len(tier, serving, arch)
    need_tokens = length * min_full_context_seqs
    weights_total = mem.weights_bytes(count_params(arch), weights)
    if serving.accelerator == "cpu":
        limits = _cpu_limits(tier, serving, arch, weights.key, kv.key, weights_total, length, need_tokens)
        seqs = _max_num_seqs(serving, limits.kv_tokens_capacity, length, typical_sequence_tokens)
        return replace(limits, max_num_seqs=seqs)
    try:
        device = gpu(serving.accelerator)
    except GPUError as err:
        raise TierPlanningError(f"tier {tier.name!r}: {err} (or 'cpu')") from None
    utilization = serving.gpu_memory_utilization or mem.VLLM_DEFAULT_GPU_MEMORY_UTILIZATION
    inputs = PlanInputs(
        gpu_memory_utilization=utilization,
        max_num_seqs=serving.max_num_seqs or mem.VLLM_DEFAULT_MAX_NUM_SEQS,
    )
    try:
        calibration = tier_calibration(tier)
    except ConfigError as err:
        raise TierPlanningError(f"tier {tier.name!r}: calibration_file: {err}") from None
    if calibration is not None:
        # Its fitted reserve terms (non-torch memory, TP buffers) size the KV pool in place of the version's.
        inputs = calibration.apply(inputs)
    smallest = min_gpus(arch, device, weights_total, weights, kv, need_tokens, inputs)
    smallest_text = (
        f"the smallest that fits is TP={smallest.layout.gpus}" if smallest else "it does not fit in 256 GPUs"
    )
    tp = serving.tensor_parallel_size
    if tp is None:
        if smallest is None or smallest.layout.pipeline_parallel_size > 1:
            raise TierPlanningError(
                f"tier {tier.name!r}: {arch.name} at {weights.key} with max_model_len {length:,} needs more"
                f" than one node of {device.gpus_per_node} x {device.key} ({smallest_text});"
                f" weights alone are {weights_total / 1e9:,.1f} GB against"
                f" {device.cuda_memory_bytes / 1e9:,.2f} GB per GPU (CUDA-visible)"
            )
        tp = smallest.layout.tensor_parallel_size
    cap = capacity(arch, device, weights_total, weights, kv, tp, inputs)
    if cap.problem is not None or cap.kv_tokens_capacity < need_tokens:
        reason = cap.problem or (
            f"its KV pool holds {cap.kv_tokens_capacity:,} tokens, fewer than {min_full_context_seqs} x {length:,}"
        )
        raise TierPlanningError(
            f"tier {tier.name!r}: {arch.name} at {weights.key} does not fit on TP={tp} x {device.key}:"
            f" {reason} (weights {cap.weights_bytes_per_gpu / 1e9:,.2f} GB + reserve"
            f" {cap.reserve_bytes_per_gpu / 1e9:,.2f} GB per GPU of {utilization:g} x"
            f" {device.cuda_memory_bytes / 1e9:,.2f} GB); {smallest_text}"
        )
    if tier.gpus and tier.gpus != tp:
        # tier.gpus states the GPUs a replica holds; a mismatch with the planned layout would mislead.
        raise TierPlanningError(
            f"tier {tier.name!r}: gpus={tier.gpus} but the engine runs on TP={tp}; set gpus to {tp}"
        )
    return EngineLimits(
        tier=tier.name,
        accelerator=device.key,
        tensor_parallel_size=tp,
        max_model_len=length,
        max_num_seqs=_max_num_seqs(serving, cap.kv_tokens_capacity, length, typical_sequence_tokens),
        gpu_memory_utilization=utilization,
        kv_cache_space_gib=None,
        kv_tokens_capacity=cap.kv_tokens_capacity,
        weights_bytes=weights_total,
        weight_dtype=weights.key,
        kv_dtype=kv.key,
    )


def _cpu_limits(
    tier: TierSpec,
    serving: ServingSpec,
    arch: Architecture,
    weights_key: str,
    kv_key: str,
    weights_total: int,
    length: int,
    need_tokens: int,
) -> EngineLimits:
    if serving.kv_cache_space_gib is None:
        raise TierPlanningError(
            f"tier {tier.name!r}: a CPU tier needs serving.kv_cache_space_gib (VLLM_CPU_KVCACHE_SPACE)"
            " so that its KV capacity is known"
        )
    tp = serving.tensor_parallel_size or 1
    problem = mem.layout_problem(arch, mem.layout_for(tp))
    if problem:
        raise TierPlanningError(f"tier {tier.name!r}: {problem}")
    budget = int(serving.kv_cache_space_gib * mem.GIB)
    per_token = mem.kv_bytes_per_token_per_worker(arch, kv_dtype(kv_key), tp, 1)
    tokens = mem.kv_tokens_from_budget(budget, per_token, mem.CPU_BLOCK_SIZE_TOKENS)
    if tokens < need_tokens:
        raise TierPlanningError(
            f"tier {tier.name!r}: a {serving.kv_cache_space_gib:g} GiB KV pool holds {tokens:,} tokens of"
            f" {arch.name} at {per_token:,} bytes each ({kv_key}), fewer than {need_tokens:,}; raise"
            f" kv_cache_space_gib to at least {need_tokens * per_token / mem.GIB:.2f}"
        )
    return EngineLimits(
        tier=tier.name,
        accelerator="cpu",
        tensor_parallel_size=tp,
        max_model_len=length,
        max_num_seqs=1,  # set by the caller
        gpu_memory_utilization=None,
        kv_cache_space_gib=serving.kv_cache_space_gib,
        kv_tokens_capacity=tokens,
        weights_bytes=weights_total,
        weight_dtype=weights_key,
        kv_dtype=kv_key,
    )


def kv_tokens_capacity(tier: TierSpec, replicas: int | None = None) -> int | None:
    """KV tokens the tier holds over `replicas` replicas (default: serving.replicas_min, the floor
    autoscaling keeps). None for tiers the planner cannot size (external, no architecture).

    Raises TierPlanningError when the tier is planned but cannot fit.
    """
    serving = tier.serving
    if serving is None or serving.architecture is None:
        return None
    count = serving.replicas_min if replicas is None else replicas
    if count < 0:
        raise ValueError("replicas must be >= 0")
    return derive_engine_limits(tier).kv_tokens_capacity * count
