"""Data types for weights and the KV cache, in bits so that int4 stays exact.

Weight-only int4 (GPTQ/AWQ style) stores, per group of `group_size` weights of one output row,
a 16-bit scale and a 4-bit zero point: (16 + 4) / 128 = 0.156 extra bits per weight at the usual
group size 128, i.e. 4.156 bits, 3.9 % over the 0.5 byte/param docs/strategy.md uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from router.errors import ConfigError

ComputeClass = Literal["fp32", "bf16", "fp8", "int8"]


class DTypeError(ConfigError):
    """An unknown dtype key; the message lists the valid ones."""


@dataclass(frozen=True, slots=True)
class DType:
    """A storage format. `compute` is the tensor-core rate the matmuls run at when it is supported."""

    key: str
    bits: int
    compute: ComputeClass
    # Weight-only formats dequantize to 16 bit in the kernel: compute runs at the bf16 rate.
    weight_only: bool = False
    # Group-wise scale + zero point (int4): extra bits per group of `group_size` weights.
    group_scale_bits: int = 0


WEIGHT_DTYPES: dict[str, DType] = {
    "fp32": DType("fp32", 32, "fp32"),
    "bf16": DType("bf16", 16, "bf16"),
    "fp16": DType("fp16", 16, "bf16"),
    # fp8 and int8 as W8A8 (vLLM's fp8 / w8a8 schemes): per-channel scales, negligible in size.
    "fp8": DType("fp8", 8, "fp8"),
    "int8": DType("int8", 8, "int8"),
    "int4": DType("int4", 4, "bf16", weight_only=True, group_scale_bits=16 + 4),
}

# KV cache formats vLLM can store (int4 KV is not a plain format there, so it is not offered).
KV_DTYPES: dict[str, DType] = {k: WEIGHT_DTYPES[k] for k in ("fp32", "bf16", "fp16", "fp8", "int8")}

DEFAULT_INT4_GROUP_SIZE = 128


def weight_dtype(key: str) -> DType:
    """The weight dtype named `key` (fp32, bf16, fp16, fp8, int8, int4)."""
    try:
        return WEIGHT_DTYPES[key.lower()]
    except KeyError:
        raise DTypeError(f"unknown weight dtype {key!r}; valid: {', '.join(WEIGHT_DTYPES)}") from None


def kv_dtype(key: str) -> DType:
    """The KV cache dtype named `key` (fp32, bf16, fp16, fp8, int8)."""
    try:
        return KV_DTYPES[key.lower()]
    except KeyError:
        raise DTypeError(f"unknown KV cache dtype {key!r}; valid: {', '.join(KV_DTYPES)}") from None


def activation_dtype(weights: DType) -> DType:
    """What activations (and by default the KV cache) use: fp32 stays fp32, all else runs in bf16."""
    return WEIGHT_DTYPES["fp32"] if weights.key == "fp32" else WEIGHT_DTYPES["bf16"]


def quantized_bytes(n_params: int, dtype: DType, group_size: int = DEFAULT_INT4_GROUP_SIZE) -> int:
    """Bytes for `n_params` weights stored in `dtype`, group scales included, rounded up."""
    bits = n_params * dtype.bits
    if dtype.group_scale_bits:
        groups = -(-n_params // group_size)
        bits += groups * dtype.group_scale_bits
    return -(-bits // 8)
