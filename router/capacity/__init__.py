"""Capacity planning: parameters, memory, KV cache, parallelism, latency and cost. Pure.

The strategy document's figures (docs/strategy.md) made executable, with their errors corrected
(docs/planner.md lists each, with the numbers). Modules, bottom up:

- `dtypes`: bits per element for weights and the KV cache (int4 with group scales).
- `architectures`: the numbers that size a model; a built-in catalogue; Hugging Face config dicts.
- `params`: exact parameter counts (dense, GQA, SwiGLU, MoE, DeepSeek MLA, MTP apart).
- `hardware`: GPU catalogue (memory as NVML and as CUDA report it, bandwidth, peak FLOP/s, price).
- `memory`: weights, KV bytes per token, vLLM's reserve terms, KV token capacity, batch that fits.
- `vllm_versions`: how vLLM release lines size the KV pool, and their engine defaults.
- `perf`: roofline prefill and decode, fixed step and server costs, TP all-reduces.
- `cost`: monthly cost (docs/strategy.md's formula), reserved cost, USD per million output tokens.
- `plan`: everything above for one (model, GPU, dtype, GPUs) question, as one result.
- `calibration`: vLLM start-up logs and benchmark points fitted into planner inputs.
"""

from router.capacity.architectures import CATALOGUE, Architecture, ArchitectureError, MLASpec, from_hf_config
from router.capacity.dtypes import KV_DTYPES, WEIGHT_DTYPES, DTypeError
from router.capacity.hardware import GPU, GPUS, GPUError
from router.capacity.plan import Plan, PlanInputs, batch_for_inter_token_latency, kv_tokens_for_budget, plan

__all__ = [
    "CATALOGUE",
    "GPU",
    "GPUS",
    "KV_DTYPES",
    "WEIGHT_DTYPES",
    "Architecture",
    "ArchitectureError",
    "DTypeError",
    "GPUError",
    "MLASpec",
    "Plan",
    "PlanInputs",
    "batch_for_inter_token_latency",
    "from_hf_config",
    "kv_tokens_for_budget",
    "plan",
]
