"""GPU catalogue: memory as the driver and as CUDA report it, bandwidth, peak dense FLOP/s, price.

Two memory totals, both facts: `memory_bytes` is NVML's (what `nvidia-smi` prints in MiB): an
"80 GB" H100 reports 81,559 MiB = 85.52 GB = 79.65 GiB; an "80 GB" A100 81,920 MiB; an H200
143,771 MiB. `cuda_memory_bytes` is what CUDA lets a process see (`cudaMemGetInfo`'s total),
which is what vLLM multiplies by `gpu_memory_utilization`: 79.19 GiB on an H100 (vLLM 0.19 logs;
79.22 GiB in vLLM's own pull 10511), 39.50 GiB on an A100-40GB (PyTorch out-of-memory messages;
vLLM 0.6-0.8 logs show 39.39-39.56, driver and ECC settings differ), 22.18 GiB on an A10, 22.30 GiB
on an A10G, 139.81 GiB on an H200 (a vLLM 0.7 log). Parts without an observation (A100-80GB, L4)
take the NVML total less the gap measured on their closest sibling, and say so (`cuda_memory_observed`).
Peak FLOP/s are dense tensor-core figures from NVIDIA's datasheets (SXM parts; the sparsity
figures are twice these and never reached by inference). fp32 matmuls run as TF32, half the
bf16 rate. `link_bytes_per_s` is the one-direction GPU-to-GPU bandwidth used by tensor-parallel
all-reduce (NVLink on A100/H100/H200, PCIe 4.0 x16 on A10/L4). Prices are round on-demand
placeholders in USD per GPU-hour (the A10 and A100 ones are docs/strategy.md's); override them.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.capacity.dtypes import ComputeClass
from router.errors import ConfigError

MIB = 2**20


class GPUError(ConfigError):
    """An unknown GPU key; the message lists the catalogue."""


@dataclass(frozen=True, slots=True)
class GPU:
    key: str
    name: str
    memory_bytes: int  # NVML's total
    cuda_memory_bytes: int  # CUDA-visible total: what vLLM's gpu_memory_utilization multiplies
    memory_bandwidth_bytes_per_s: float
    bf16_flops: float
    fp8_flops: float | None  # None: no fp8 tensor cores (fp8 weights then run at the bf16 rate)
    int8_flops: float
    link_bytes_per_s: float
    link_hop_latency_s: float  # one latency-bound step of a ring all-reduce (2 (tp - 1) of them)
    price_per_hour_usd: float
    cuda_memory_observed: bool = True  # False: estimated from a sibling part's NVML-to-CUDA gap
    gpus_per_node: int = 8

    def peak_flops(self, compute: ComputeClass) -> float:
        """Dense peak FLOP/s for matmuls in `compute`; formats without tensor cores fall back to bf16."""
        if compute == "fp32":
            return self.bf16_flops / 2
        if compute == "fp8":
            return self.fp8_flops if self.fp8_flops is not None else self.bf16_flops
        if compute == "int8":
            return self.int8_flops
        return self.bf16_flops


# Per ring step. Fitted to one pair of public measurements and physically a latency per hop: Llama-3-70B
# decoding alone on H100s took 28.4 ms a step at TP 2 and 17.0 ms at TP 4 (docs/planner.md, L9/L11),
# 1.0 and 3.0 ms more than reading the weights: 160 all-reduces x 2 (tp - 1) hops x 3.2 us, plus the
# fixed step cost. PCIe: 12.5 us a hop (25 us for a TP-2 all-reduce), not measured here.
_NVLINK_HOP_LATENCY_S = 3.2e-6
_PCIE_HOP_LATENCY_S = 12.5e-6

_PCIE4_BYTES_PER_S = 32e9
_PCIE = (_PCIE4_BYTES_PER_S, _PCIE_HOP_LATENCY_S)
_NVLINK3 = (300e9, _NVLINK_HOP_LATENCY_S)
_NVLINK4 = (450e9, _NVLINK_HOP_LATENCY_S)
_AMPERE_FLOPS = (312e12, None, 624e12)  # bf16, fp8, int8 dense
_HOPPER_FLOPS = (989.4e12, 1978.9e12, 1978.9e12)


def _gpu(
    key: str,
    name: str,
    memory_mib: int,
    cuda_gib: tuple[float, bool],
    bandwidth: float,
    flops: tuple[float, float | None, float],
    link: tuple[float, float],
    price_per_hour_usd: float,
) -> GPU:
    cuda = int(cuda_gib[0] * 2**30)
    return GPU(key, name, memory_mib * MIB, cuda, bandwidth, *flops, *link, price_per_hour_usd, cuda_gib[1])


# NVML total -> CUDA-visible total gaps observed on one part, used for its siblings.
_A100_GAP_GIB = 40.0 - 39.50
_A10_GAP_GIB = 23028 / 1024 - 22.18


GPUS: dict[str, GPU] = {
    g.key: g
    for g in (
        _gpu("a10", "NVIDIA A10 24GB", 23028, (22.18, True), 600e9, (125e12, None, 250e12), _PCIE, 1.20),
        # AWS's A10G: the A10's memory system; NVIDIA publishes no separate tensor figures.
        _gpu("a10g", "NVIDIA A10G 24GB", 23028, (22.30, True), 600e9, (125e12, None, 250e12), _PCIE, 1.20),
        _gpu(
            "l4", "NVIDIA L4 24GB", 23034, (23034 / 1024 - _A10_GAP_GIB, False), 300e9,
            (121e12, 242.5e12, 242.5e12), _PCIE, 0.80,
        ),
        _gpu("a100-40gb", "NVIDIA A100-SXM4-40GB", 40960, (39.50, True), 1555e9, _AMPERE_FLOPS, _NVLINK3, 3.00),
        _gpu(
            "a100-80gb", "NVIDIA A100-SXM4-80GB", 81920, (80.0 - _A100_GAP_GIB, False), 2039e9,
            _AMPERE_FLOPS, _NVLINK3, 4.00,
        ),
        _gpu("h100-80gb", "NVIDIA H100 80GB HBM3", 81559, (79.19, True), 3.35e12, _HOPPER_FLOPS, _NVLINK4, 5.00),
        # 139.81 GiB: a vLLM 0.7 start-up log of DeepSeek-R1 on 8 x H200 (docs/planner.md); the H100's
        # gap would have said 139.94.
        _gpu("h200", "NVIDIA H200 141GB HBM3e", 143771, (139.81, True), 4.8e12, _HOPPER_FLOPS, _NVLINK4, 6.50),
    )
}  # fmt: skip


def gpu(key: str) -> GPU:
    """The catalogue GPU `key` (a10, a10g, l4, a100-40gb, a100-80gb, h100-80gb, h200)."""
    try:
        return GPUS[key.lower()]
    except KeyError:
        raise GPUError(f"unknown gpu {key!r}; valid: {', '.join(GPUS)}") from None
