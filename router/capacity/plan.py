"""One planning question (model, GPU, dtypes, GPUs, context) answered as one `Plan`.

Capacity and speed are computed for the asked `gpus` (or, when none is asked, for `min_gpus`):
the smallest power of two whose memory holds the weights, the per-GPU reserve and the KV of
one full-context sequence, in a layout vLLM accepts (TP within a node, pipeline stages beyond).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from router.capacity import memory as mem
from router.capacity.architectures import Architecture
from router.capacity.cost import HOURS_PER_MONTH, cost
from router.capacity.dtypes import DEFAULT_INT4_GROUP_SIZE, DType, activation_dtype, kv_dtype, weight_dtype
from router.capacity.hardware import GPU
from router.capacity.params import ParamBreakdown, count_params, rough_active_estimate, rough_params_estimate
from router.capacity.perf import DecodeStep, Efficiency, decode_step, tp_comm_s, ttft_s
from router.capacity.vllm_versions import (
    DEFAULT_CUDA_GRAPH_BYTES,
    DEFAULT_VLLM_VERSION,
    LARGE_GPU_BYTES,
    SAMPLER_BYTES_PER_LOGIT,
    vllm_version,
)
from router.errors import ConfigError


@dataclass(frozen=True, slots=True)
class PlanInputs:
    """The question. Units in the names; None means 'derive it' (see each field)."""

    dtype: str = "bf16"
    kv_dtype: str | None = None  # None: the activation dtype (bf16; fp32 for fp32 weights)
    gpus: int | None = None  # None: min_gpus
    gpu_memory_utilization: float = mem.VLLM_DEFAULT_GPU_MEMORY_UTILIZATION
    kv_budget_bytes: int | None = None  # per-worker KV pool; replaces the memory arithmetic
    context_tokens: int | None = None  # None: the model's maximum context
    prompt_tokens: int = 1024
    price_per_gpu_hour_usd: float | None = None  # None: the catalogue's default
    hours: float = HOURS_PER_MONTH
    utilization: float = 1.0
    efficiency: Efficiency = field(default_factory=Efficiency)
    block_size_tokens: int = mem.DEFAULT_BLOCK_SIZE_TOKENS
    # vLLM's limits; None: the version's default for this GPU (router.capacity.vllm_versions).
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    vllm_version: str = DEFAULT_VLLM_VERSION
    cuda_graph_bytes_per_gpu: int = DEFAULT_CUDA_GRAPH_BYTES  # out of the budget where the version says
    non_torch_bytes_per_gpu: int | None = None  # None: the version's; a calibration's fit otherwise
    comm_buffer_bytes_per_gpu: int | None = None  # TP > 1 only; None: the version's
    batch: int | None = None  # decode and TTFT figures at this batch; None: max_batch
    # Output tokens per request under a closed loop of equal requests: each decode step then also
    # carries the prompt tokens of requests joining the batch (batch x prompt / output), and a
    # prompt is prefilled with its wave of `batch` prompts (see _ttft_s). None: no interference.
    output_tokens: int | None = None
    int4_group_size: int = DEFAULT_INT4_GROUP_SIZE
    quantize_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.gpus is not None and self.gpus < 1:
            raise ConfigError("gpus must be >= 1")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ConfigError("gpu_memory_utilization must lie in (0, 1]")
        if self.kv_budget_bytes is not None and self.kv_budget_bytes <= 0:
            raise ConfigError("kv_budget_bytes must be > 0")
        if self.context_tokens is not None and self.context_tokens < 1:
            raise ConfigError("context_tokens must be >= 1")
        if self.prompt_tokens < 1:
            raise ConfigError("prompt_tokens must be >= 1")
        if self.hours < 0 or not 0.0 <= self.utilization <= 1.0:
            raise ConfigError("hours must be >= 0 and utilization in [0, 1]")
        limits = (self.max_num_seqs, self.max_num_batched_tokens, self.batch, self.output_tokens)
        if self.block_size_tokens < 1 or any(x is not None and x < 1 for x in limits):
            raise ConfigError(
                "block_size_tokens, max_num_seqs, max_num_batched_tokens, batch, output_tokens must be >= 1"
            )
        overrides = (self.non_torch_bytes_per_gpu, self.comm_buffer_bytes_per_gpu)
        if self.cuda_graph_bytes_per_gpu < 0 or any(x is not None and x < 0 for x in overrides):
            raise ConfigError("reserve terms must be >= 0 bytes")
        vllm_version(self.vllm_version)  # an unknown version is refused here, with the known ones

    def engine_limits(self, gpu: GPU, context_tokens: int) -> tuple[int, int]:
        """(max_num_batched_tokens, max_num_seqs): the given ones, else the version's defaults."""
        version = vllm_version(self.vllm_version)
        large = gpu.cuda_memory_bytes >= LARGE_GPU_BYTES and "a100" not in gpu.key
        tokens = self.max_num_batched_tokens or version.max_num_batched_tokens(large, context_tokens)
        return tokens, self.max_num_seqs or version.max_num_seqs(large)


@dataclass(frozen=True, slots=True)
class Capacity:
    """Memory split on each worker of one layout, and the KV tokens it holds."""

    layout: mem.Layout
    weights_bytes_per_gpu: int
    reserve_bytes_per_gpu: int
    kv_budget_bytes_per_gpu: int
    kv_bytes_per_token_per_gpu: int
    kv_tokens_capacity: int
    problem: str | None  # why vLLM would refuse the layout or memory does not hold it


def reserve(
    arch: Architecture, gpu: GPU, weights: DType, tp: int, context_tokens: int, inputs: PlanInputs
) -> mem.Reserve:
    """What one GPU gives up before its KV pool, in the terms of `inputs.vllm_version`'s profile."""
    version = vllm_version(inputs.vllm_version)
    tokens, seqs = inputs.engine_limits(gpu, context_tokens)
    activation = mem.activation_peak_bytes(
        arch,
        activation_dtype(weights),
        tp,
        max_num_batched_tokens=tokens,
        max_num_seqs=seqs,
        together=version.activation_peak == "sum",
        sampler_bytes_per_logit=SAMPLER_BYTES_PER_LOGIT,
    )
    non_torch = version.non_torch_bytes if inputs.non_torch_bytes_per_gpu is None else inputs.non_torch_bytes_per_gpu
    comm = version.comm_buffer_bytes if inputs.comm_buffer_bytes_per_gpu is None else inputs.comm_buffer_bytes_per_gpu
    graphs = inputs.cuda_graph_bytes_per_gpu if version.cuda_graphs_in_budget else 0
    return mem.Reserve(activation, non_torch, comm if tp > 1 else 0, graphs)


def capacity(
    arch: Architecture,
    gpu: GPU,
    weights_total_bytes: int,
    weights: DType,
    kv: DType,
    gpus: int,
    inputs: PlanInputs,
    context_tokens: int | None = None,
) -> Capacity:
    """KV tokens `gpus` GPUs hold for this model (0 when the weights and reserve do not fit)."""
    layout = mem.layout_for(gpus, gpu.gpus_per_node)
    tp, pp = layout.tensor_parallel_size, layout.pipeline_parallel_size
    context = context_tokens or min(inputs.context_tokens or arch.max_context_tokens, arch.max_context_tokens)
    reserve_bytes = reserve(arch, gpu, weights, tp, context, inputs).total_bytes
    weights_per_gpu = -(-weights_total_bytes // gpus)
    per_token = mem.kv_bytes_per_token_per_worker(arch, kv, tp, pp)
    problem = mem.layout_problem(arch, layout)
    if inputs.kv_budget_bytes is not None:
        budget = inputs.kv_budget_bytes
        if weights_per_gpu + reserve_bytes + budget > gpu.cuda_memory_bytes:
            problem = problem or "weights + reserve + the given KV budget exceed the GPU's memory"
    else:
        budget = mem.kv_budget_bytes_per_worker(
            gpu.cuda_memory_bytes, inputs.gpu_memory_utilization, weights_total_bytes, gpus, reserve_bytes
        )
        if budget <= 0:
            problem = problem or "weights + reserve exceed gpu_memory_utilization x memory"
    tokens = mem.kv_tokens_from_budget(budget, per_token, inputs.block_size_tokens)
    return Capacity(layout, weights_per_gpu, reserve_bytes, budget, per_token, tokens, problem)


def min_gpus(
    arch: Architecture,
    gpu: GPU,
    weights_total_bytes: int,
    weights: DType,
    kv: DType,
    context_tokens: int,
    inputs: PlanInputs,
) -> Capacity | None:
    """The smallest power-of-two layout holding one `context_tokens` sequence, or None (> 256 GPUs)."""
    n = 1
    while n <= mem.MAX_GPUS_SEARCHED:
        cap = capacity(arch, gpu, weights_total_bytes, weights, kv, n, inputs, context_tokens)
        if cap.problem is None and cap.kv_tokens_capacity >= context_tokens:
            return cap
        n *= 2
    return None


@dataclass(frozen=True, slots=True)
class Plan:
    """The answer. Bytes are bytes; rates per second; money in USD; None where undefined."""

    model: str
    gpu: str
    dtype: str
    kv_dtype: str
    gpus: int
    params_total: int
    params_active: int
    params_rough_estimate: int  # 12 * L * d^2
    params_active_rough_estimate: int  # total / experts (docs/strategy.md's MoE rule)
    params_mtp_module: int  # reported apart, not in params_total
    weights_bytes: int
    weights_bytes_per_gpu: int
    kv_bytes_per_token: int
    kv_bytes_per_token_mha: int  # docs/strategy.md's formula: attention heads, not KV heads
    reserve_bytes_per_gpu: int
    kv_budget_bytes_per_gpu: int
    kv_tokens_capacity: int
    context_tokens: int
    max_batch: int
    min_gpus: int | None
    tensor_parallel_size: int | None
    pipeline_parallel_size: int | None
    asked_tensor_parallel_size: int
    fits: bool
    fit_problem: str | None
    prompt_tokens: int
    ttft_ms_estimate: float
    decode_tokens_per_s_per_seq: float
    decode_tokens_per_s_aggregate: float
    tp_comm_fraction: float
    monthly_cost_usd: float
    monthly_cost_reserved_usd: float
    usd_per_million_tokens: float | None
    usd_per_million_tokens_reserved: float | None
    price_per_gpu_hour_usd: float
    hours: float
    utilization: float
    gpu_memory_bytes: int
    gpu_cuda_memory_bytes: int
    gpu_memory_utilization: float
    flops_fraction: float
    bandwidth_fraction: float
    step_overhead_s: float
    server_overhead_s: float
    block_size_tokens: int
    max_num_seqs: int
    max_num_batched_tokens: int
    batch: int  # the batch the decode and TTFT figures are for
    vllm_version: str
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data


def _notes(
    arch: Architecture, params: ParamBreakdown, cap: Capacity, context_tokens: int, asked: int | None
) -> tuple[str, ...]:
    notes = []
    if asked is not None and asked > arch.max_context_tokens:
        notes.append(f"context_tokens {asked:,} capped at the model's maximum, {arch.max_context_tokens:,}")
    if arch.mla is not None:
        notes.append(
            "MLA KV cache approximated as (kv_lora_rank + qk_rope_head_dim) per layer, replicated on each"
            " TP rank; attention weights counted exactly"
        )
    if params.mtp_module:
        notes.append(f"multi-token-prediction module: {params.mtp_module:,} params, not in params_total")
    if arch.is_moe:
        notes.append("params_active = non-expert weights + shared experts + top-k routed experts per token")
    if cap.problem:
        notes.append(f"does not fit: {cap.problem}")
    elif cap.kv_tokens_capacity < context_tokens:
        notes.append(f"KV holds {cap.kv_tokens_capacity:,} tokens, fewer than one {context_tokens:,}-token sequence")
    return tuple(notes)


@dataclass(frozen=True, slots=True)
class _Sized:
    """What every question about one (model, GPU, inputs) shares."""

    weights: DType
    kv: DType
    params: ParamBreakdown
    weights_bytes: int
    context: int
    smallest: Capacity | None
    cap: Capacity
    max_batch: int


def _size(arch: Architecture, gpu: GPU, q: PlanInputs) -> _Sized:
    weights = weight_dtype(q.dtype)
    kv = kv_dtype(q.kv_dtype) if q.kv_dtype else activation_dtype(weights)
    params = count_params(arch)
    w_bytes = mem.weights_bytes(
        params, weights, group_size=q.int4_group_size, quantize_embeddings=q.quantize_embeddings
    )
    context = min(q.context_tokens or arch.max_context_tokens, arch.max_context_tokens)
    smallest = min_gpus(arch, gpu, w_bytes, weights, kv, context, q)
    gpus = q.gpus if q.gpus is not None else (smallest.layout.gpus if smallest else mem.MAX_GPUS_SEARCHED)
    cap = capacity(arch, gpu, w_bytes, weights, kv, gpus, q, context)
    # Memory holds kv // context sequences; the engine runs no more than max_num_seqs at once.
    seqs = q.engine_limits(gpu, context)[1]
    batch = min(mem.max_batch(cap.kv_tokens_capacity, context), seqs) if cap.problem is None else 0
    return _Sized(weights, kv, params, w_bytes, context, smallest, cap, batch)


def _decode(arch: Architecture, gpu: GPU, q: PlanInputs, sized: _Sized, batch: int) -> DecodeStep:
    kv_total_per_token = sized.cap.kv_bytes_per_token_per_gpu * sized.cap.layout.gpus
    prompt = min(q.prompt_tokens, sized.context)
    # Under load every request's prompt passes through the steps that decode its output.
    joining = 0.0 if q.output_tokens is None or batch <= 1 else max(batch, 1) * prompt / q.output_tokens
    return decode_step(
        arch,
        sized.params,
        gpu,
        sized.weights,
        sized.weights_bytes,
        kv_total_per_token,
        sized.cap.layout,
        max(batch, 1),
        sized.context,
        q.efficiency,
        joining,
    )


def _ttft_s(
    arch: Architecture, gpu: GPU, q: PlanInputs, sized: _Sized, batch: int, prompt: int, step: DecodeStep
) -> float:
    """Time to first token at `batch` (seconds).

    Alone: the prompt's own prefill. At a batch above one the prompt waits, on average, for the
    step in flight and its own step carries the running decodes: one decode step more. Under a
    closed loop of equal requests (`output_tokens` set) the requests finish together and come back
    together, so a prompt is prefilled with its whole wave: `batch` prompts, `max_num_batched_tokens`
    a step, first come first served; the median request's first token comes at the end of the step
    that holds its last prompt token (L4 at 16 concurrent 256-token prompts: 4,096 tokens, two steps).
    """
    alone = ttft_s(arch, sized.params, gpu, sized.weights, sized.cap.layout, prompt, q.efficiency)
    if batch <= 1:
        return alone
    if q.output_tokens is None:
        return alone + step.step_s
    budget = q.engine_limits(gpu, sized.context)[0]
    ends: list[float] = []  # end time of each prefill step
    done = 0
    while done < batch * prompt:
        tokens = min(budget, batch * prompt - done)
        # A prefill step reads the weights like a decode step and adds the chunk's FLOPs.
        chunk = decode_step(
            arch,
            sized.params,
            gpu,
            sized.weights,
            sized.weights_bytes,
            sized.cap.kv_bytes_per_token_per_gpu * sized.cap.layout.gpus,
            sized.cap.layout,
            1,
            prompt,
            q.efficiency,
            tokens - 1,
        )
        ends.append((ends[-1] if ends else 0.0) + chunk.step_s)
        done += tokens
    firsts = [ends[-(-(i * prompt) // budget) - 1] for i in range(1, batch + 1)]
    return q.efficiency.server_overhead_s + statistics.median(firsts)


def batch_for_inter_token_latency(
    arch: Architecture, gpu: GPU, inputs: PlanInputs, inter_token_budget_ms: float
) -> int:
    """The largest batch (at most max_batch) whose decode step stays within `inter_token_budget_ms`.

    For latency classes: docs/strategy.md caps realtime batches at 4 by rule; this is the roofline's
    answer instead (0 when even one sequence is slower than the budget, or nothing fits).
    A decode step only grows with the batch, so a bisection finds it.
    """
    sized = _size(arch, gpu, inputs)
    lo, hi = 0, sized.max_batch
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _decode(arch, gpu, inputs, sized, mid).step_s * 1e3 <= inter_token_budget_ms:
            lo = mid
        else:
            hi = mid - 1
    return lo


def plan(arch: Architecture, gpu: GPU, inputs: PlanInputs | None = None) -> Plan:
    """Answer `inputs` for `arch` on `gpu`. Raises ConfigError (DTypeError among them) on bad inputs only;
    a model that does not fit is an answer (fits=False), not an error."""
    q = inputs or PlanInputs()
    sized = _size(arch, gpu, q)
    weights, kv, params, w_bytes = sized.weights, sized.kv, sized.params, sized.weights_bytes
    context, smallest, cap, batch = sized.context, sized.smallest, sized.cap, sized.max_batch
    gpus = cap.layout.gpus
    prompt = min(q.prompt_tokens, context)
    fits = cap.problem is None and cap.kv_tokens_capacity >= context
    at = batch if q.batch is None else min(q.batch, max(batch, 1))
    step = _decode(arch, gpu, q, sized, at)
    per_seq = 1.0 / step.step_s
    aggregate = per_seq * at
    tokens_limit, seqs_limit = q.engine_limits(gpu, context)
    price = gpu.price_per_hour_usd if q.price_per_gpu_hour_usd is None else q.price_per_gpu_hour_usd
    money = cost(price, gpus, q.hours, q.utilization, aggregate)
    return Plan(
        model=arch.name,
        gpu=gpu.key,
        dtype=weights.key,
        kv_dtype=kv.key,
        gpus=gpus,
        params_total=params.total,
        params_active=params.active,
        params_rough_estimate=rough_params_estimate(arch),
        params_active_rough_estimate=rough_active_estimate(arch, params.total),
        params_mtp_module=params.mtp_module,
        weights_bytes=w_bytes,
        weights_bytes_per_gpu=cap.weights_bytes_per_gpu,
        kv_bytes_per_token=mem.kv_bytes_per_token(arch, kv),
        kv_bytes_per_token_mha=mem.mha_kv_bytes_per_token(arch, kv),
        reserve_bytes_per_gpu=cap.reserve_bytes_per_gpu,
        kv_budget_bytes_per_gpu=cap.kv_budget_bytes_per_gpu,
        kv_tokens_capacity=cap.kv_tokens_capacity,
        context_tokens=context,
        max_batch=batch,
        min_gpus=smallest.layout.gpus if smallest else None,
        tensor_parallel_size=smallest.layout.tensor_parallel_size if smallest else None,
        pipeline_parallel_size=smallest.layout.pipeline_parallel_size if smallest else None,
        asked_tensor_parallel_size=cap.layout.tensor_parallel_size,
        fits=fits,
        fit_problem=cap.problem,
        prompt_tokens=prompt,
        ttft_ms_estimate=1e3 * _ttft_s(arch, gpu, q, sized, at, prompt, step),
        decode_tokens_per_s_per_seq=per_seq,
        decode_tokens_per_s_aggregate=aggregate,
        tp_comm_fraction=step.comm_fraction,
        monthly_cost_usd=money.monthly_cost_usd,
        monthly_cost_reserved_usd=money.monthly_cost_reserved_usd,
        usd_per_million_tokens=money.usd_per_million_tokens,
        usd_per_million_tokens_reserved=money.usd_per_million_tokens_reserved,
        price_per_gpu_hour_usd=price,
        hours=q.hours,
        utilization=q.utilization,
        gpu_memory_bytes=gpu.memory_bytes,
        gpu_cuda_memory_bytes=gpu.cuda_memory_bytes,
        gpu_memory_utilization=q.gpu_memory_utilization,
        flops_fraction=q.efficiency.flops_fraction,
        bandwidth_fraction=q.efficiency.bandwidth_fraction,
        step_overhead_s=q.efficiency.step_overhead_s,
        server_overhead_s=q.efficiency.server_overhead_s,
        block_size_tokens=q.block_size_tokens,
        max_num_seqs=seqs_limit,
        max_num_batched_tokens=tokens_limit,
        batch=at,
        vllm_version=q.vllm_version,
        notes=_notes(arch, params, cap, context, q.context_tokens),
    )


def kv_tokens_for_budget(
    arch: Architecture,
    kv_dtype_key: str,
    budget_bytes_per_worker: int,
    *,
    tensor_parallel_size: int = 1,
    block_size_tokens: int = mem.DEFAULT_BLOCK_SIZE_TOKENS,
) -> int:
    """KV tokens a fixed per-worker pool holds (vLLM-CPU's VLLM_CPU_KVCACHE_SPACE, kv_cache_memory_bytes)."""
    per_token = mem.kv_bytes_per_token_per_worker(arch, kv_dtype(kv_dtype_key), tensor_parallel_size, 1)
    return mem.kv_tokens_from_budget(budget_bytes_per_worker, per_token, block_size_tokens)


def decode_step_for(arch: Architecture, gpu: GPU, inputs: PlanInputs, batch: int) -> DecodeStep:
    """The planned layout's decode step with `batch` sequences at `inputs.context_tokens`."""
    sized = _size(arch, gpu, inputs)
    return _decode(arch, gpu, inputs, sized, max(batch, 1))


def prefill_parts_for(arch: Architecture, gpu: GPU, inputs: PlanInputs) -> tuple[float, float]:
    """(prefill seconds at `inputs.efficiency` without fixed costs, TP all-reduce seconds)."""
    sized = _size(arch, gpu, inputs)
    layout = sized.cap.layout
    prompt = min(inputs.prompt_tokens, sized.context)
    comm = tp_comm_s(arch, gpu, layout, prompt, activation_dtype(sized.weights))
    eff = replace(inputs.efficiency, server_overhead_s=0.0, step_overhead_s=0.0)
    return ttft_s(arch, sized.params, gpu, sized.weights, layout, prompt, eff) - comm, comm


def decode_ms_per_token(arch: Architecture, gpu: GPU, inputs: PlanInputs, batch: int) -> float:
    """One decode step (ms) with `batch` sequences at `inputs.context_tokens`, on the planned layout."""
    sized = _size(arch, gpu, inputs)
    return _decode(arch, gpu, inputs, sized, min(max(batch, 1), max(sized.max_batch, 1))).step_s * 1e3
