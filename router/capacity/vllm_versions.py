"""How vLLM versions size their KV pool: the terms of their memory profile, and their engine defaults.

vLLM gives the KV cache what is left of `gpu_memory_utilization` x the CUDA-visible total after
four terms it measures at start-up (its "Memory profiling" log lines): the weights, the peak
activations of a profiling forward pass, the non-torch memory that pass added (CUDA context
growth, cuBLAS workspaces, and with TP > 1 the NCCL and custom all-reduce buffers), and, in
versions that profile them, the CUDA graphs. Versions differ in three ways, each an explicit
input here rather than a guess:

- the engine defaults for `max_num_batched_tokens` / `max_num_seqs` (what the profiling pass
  runs with, and what caps a batch);
- whether the forward pass and the sampler peak together (the v0 engine sampled inside the
  profiled forward) or one after the other (v1: the peak is the larger of the two);
- whether CUDA-graph memory is taken out of the budget before the KV pool is sized.

Sources (docs/planner.md lists every data point):
- "0.6": vLLM 0.6.5 on an H100, Llama-3-8B at TP 1 and 2: non_torch_memory 1.79 / 3.58 GiB,
  activation 1.26 GiB both (vllm-project/vllm pull 10511).
- "0.19": vLLM 0.19.0 on H100s (llm-d-incubation/llm-d-planner accuracy logs): non-torch
  0.24-0.25 GiB at TP 1, 2.06-2.21 GiB at TP 2-4 (Llama-3.1-8B, Qwen2.5-7B, Llama-3.3-70B,
  Mixtral); activation the same at TP 1, 2, 4 (1.89 GiB for Llama-3.1-8B, 2.21 for Qwen2.5-7B,
  whose vocabularies are 128,256 and 152,064); CUDA graphs captured after the KV pool is sized
  (0.5-1.9 GiB, outside the budget). Defaults logged: 8,192 batched tokens, 1,024 sequences.
- "0.20": the same engine with CUDA-graph memory profiling on, which the 0.19 log announces as
  the next default (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1): graphs come out of the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from router.capacity.memory import GIB
from router.errors import ConfigError

# vLLM's v1 engine picks larger defaults on GPUs of 70 GiB or more that are not A100s.
LARGE_GPU_BYTES = 70 * GIB
# Per element of the sampler's [sequences x vocabulary] tensors in the profiling pass: fp32
# logits, fp32 probabilities and the int64 indices of the top-k/top-p sort (4 + 4 + 8 bytes).
SAMPLER_BYTES_PER_LOGIT = 16
# Observed CUDA-graph pools in the 0.19 logs: 0.51-1.85 GiB, about 1 GiB for 7-8B models.
DEFAULT_CUDA_GRAPH_BYTES = GIB

ActivationPeak = Literal["sum", "max"]


class VllmVersionError(ConfigError):
    """An unknown vLLM version key; the message lists the known ones."""


@dataclass(frozen=True, slots=True)
class VllmVersion:
    """One vLLM release line's memory-profile behaviour and engine defaults."""

    key: str
    description: str
    # Engine defaults: (on large GPUs, elsewhere). None for batched tokens: max(context, 2048).
    default_max_num_batched_tokens: tuple[int | None, int | None]
    default_max_num_seqs: tuple[int, int]
    non_torch_bytes: int  # what the profiling pass adds outside torch on one GPU, TP = 1
    comm_buffer_bytes: int  # added per GPU when TP > 1 (NCCL + custom all-reduce buffers)
    activation_peak: ActivationPeak  # forward and sampler peaks: together ("sum") or apart ("max")
    cuda_graphs_in_budget: bool  # CUDA-graph memory taken out before the KV pool is sized

    def max_num_batched_tokens(self, large_gpu: bool, context_tokens: int) -> int:
        """The engine's default token budget per step (the profiling pass's tokens)."""
        value = self.default_max_num_batched_tokens[0 if large_gpu else 1]
        return value if value is not None else max(context_tokens, 2048)

    def max_num_seqs(self, large_gpu: bool) -> int:
        """The engine's default cap on sequences in one batch."""
        return self.default_max_num_seqs[0 if large_gpu else 1]


def _gib(x: float) -> int:
    return int(x * GIB)


VLLM_VERSIONS: dict[str, VllmVersion] = {
    v.key: v
    for v in (
        VllmVersion(
            "0.6",
            "v0 engine (0.6.x): profiled forward samples inside the pass; CUDA context counted",
            (None, None),
            (256, 256),
            _gib(1.79),
            _gib(1.79),
            "sum",
            False,
        ),
        VllmVersion(
            "0.19",
            "v1 engine (0.8-0.19): sampler peak apart from the forward; CUDA graphs outside the budget",
            (8192, 2048),
            (1024, 256),
            _gib(0.25),
            _gib(1.85),
            "max",
            False,
        ),
        VllmVersion(
            "0.20",
            "v1 engine with CUDA-graph memory profiled into the budget",
            (8192, 2048),
            (1024, 256),
            _gib(0.25),
            _gib(1.85),
            "max",
            True,
        ),
    )
}
DEFAULT_VLLM_VERSION = "0.19"


def vllm_version(key: str) -> VllmVersion:
    """The version profile `key` (0.6, 0.19, 0.20); a longer version string picks its line."""
    if key in VLLM_VERSIONS:
        return VLLM_VERSIONS[key]
    parts = key.lstrip("v").split(".")
    if len(parts) >= 2 and parts[0] == "0" and parts[1].isdigit():
        minor = int(parts[1])
        if minor >= 20:
            return VLLM_VERSIONS["0.20"]
        if minor >= 8:
            return VLLM_VERSIONS["0.19"]
        if minor >= 6:
            return VLLM_VERSIONS["0.6"]
    raise VllmVersionError(f"unknown vLLM version {key!r}; known: {', '.join(VLLM_VERSIONS)} (or 0.6.x-0.2x.y)")
