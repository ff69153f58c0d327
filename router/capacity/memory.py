"""Memory: weights, KV cache per token, reserve, KV token capacity, batch that fits, GPUs needed.

Accounting follows vLLM: the engine may use `gpu_memory_utilization` x the GPU's CUDA-visible
total; from it come the weights, the peak activations of its profiling pass, the non-torch
memory that pass adds (and with TP > 1 the communication buffers), and in versions that profile
them the CUDA graphs (`Reserve`, sized per vLLM version in router.capacity.vllm_versions); the
rest is the KV pool, cut into blocks of `block_size` tokens. Each worker gets the same number of
blocks. On vLLM-CPU the KV pool is given directly (VLLM_CPU_KVCACHE_SPACE, GiB).

Where the strategy document (docs/strategy.md) is loose:
- Its KV formula `B * 2 * n_layers * n_heads * d_head * seq * bytes` uses attention heads. With
  grouped-query attention only the KV heads are cached: Llama-3.3-70B stores 8 of 64 heads,
  327,680 bytes per token at bf16, 8x less than the formula's 2,621,440.
- Its batch rule `(0.8 * gpu_memory - weights) // kv_per_sample` forgets activations and
  overhead; vLLM's own default is 0.9 of memory with those taken out first.
- FP16 Llama-2-70B on 2 x A100-80GB: 137.95 GB of weights in 2 x 0.9 x 85.36 GB (CUDA-visible)
  leaves, after 2 x 2.57 GB of reserve (activations, non-torch memory and about 2 GB of
  all-reduce buffers per GPU at TP 2), 10.6 GB of KV: 32,240 tokens, seven 4,096-token
  sequences, not the nine an NVML total and a flat reserve promised. It fits, barely. One
  128K-token sequence of Llama-3.3-70B (42.9 GB of KV) does not fit on two H100s, which is why
  it is served at TP=4 (450,352 tokens of KV there).
"""

from __future__ import annotations

from dataclasses import dataclass

from router.capacity.architectures import Architecture
from router.capacity.dtypes import DEFAULT_INT4_GROUP_SIZE, WEIGHT_DTYPES, DType, quantized_bytes
from router.capacity.params import ParamBreakdown

GIB = 2**30  # bytes in a GiB; the one definition, imported by deployments/ and the CLI
DEFAULT_BLOCK_SIZE_TOKENS = 16  # vLLM's default KV block for GPU attention backends
CPU_BLOCK_SIZE_TOKENS = 128  # what vLLM-CPU 0.32 picked for SmolLM2 (read from its cache config)
# vLLM's engine defaults (its EngineArgs), what an engine runs with when the profile or the CLI
# leaves the value out. This is their one home: the planner, deployments/ and the CLI import them.
# Versions and GPUs differ for batched tokens and sequences (router.capacity.vllm_versions); 256
# sequences is the value every version uses below 70 GiB and deployments/ caps a tier's batch at.
VLLM_DEFAULT_MAX_NUM_SEQS = 256
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.9  # share of each GPU's memory the engine may take
MAX_GPUS_SEARCHED = 256


def weights_bytes(
    params: ParamBreakdown,
    dtype: DType,
    *,
    group_size: int = DEFAULT_INT4_GROUP_SIZE,
    quantize_embeddings: bool = False,
) -> int:
    """Bytes of the weights in `dtype`.

    Quantized formats (8 and 4 bit) compress the blocks' linear layers; embeddings, head, norms and
    MoE routers stay 16-bit unless `quantize_embeddings` (then only norms and routers stay 16-bit).
    """
    if dtype.bits >= 16:
        return quantized_bytes(params.total, dtype)
    sixteen = WEIGHT_DTYPES["bf16"]
    quantized = params.linear + (params.embedding + params.lm_head if quantize_embeddings else 0)
    rest = params.total - quantized
    return quantized_bytes(quantized, dtype, group_size) + quantized_bytes(rest, sixteen)


def kv_bytes_per_token(arch: Architecture, kv: DType) -> int:
    """KV cache bytes per token over all layers, unsharded.

    Grouped-query attention: 2 (K and V) x layers x KV heads x head_dim x bytes. MLA (DeepSeek)
    caches one compressed latent plus the rotary key per layer, (kv_lora_rank + qk_rope_head_dim)
    x bytes; this is an approximation: attention backends may pad it (FlashMLA's fp8 layout
    stores 656 bytes) and DeepSeek's sparse-attention variants add an indexer cache.
    """
    return kv_bytes_per_token_per_worker(arch, kv, 1, 1)


def kv_heads_per_rank(arch: Architecture, tp: int) -> int:
    """KV heads each TP rank stores: heads split over ranks, replicated when fewer heads than ranks."""
    if arch.mla is not None:
        return 1  # the latent is shared by all heads and replicated on every rank
    return -(-arch.n_kv_heads // tp)


def kv_bytes_per_token_per_worker(arch: Architecture, kv: DType, tp: int, pp: int) -> int:
    """KV bytes one worker stores per token: its KV heads, its pipeline stage's layers."""
    layers = -(-arch.n_layers // pp)
    if arch.mla is not None:
        elems = layers * (arch.mla.kv_lora_rank + arch.mla.qk_rope_head_dim)
    else:
        elems = 2 * layers * kv_heads_per_rank(arch, tp) * arch.head_dim
    return -(-elems * kv.bits // 8)


def mha_kv_bytes_per_token(arch: Architecture, kv: DType) -> int:
    """KV bytes per token as if every attention head cached its own K and V (multi-head attention).

    docs/strategy.md's formula; wrong with grouped-query attention or MLA, kept to show the gap.
    """
    head_dim = arch.head_dim if arch.mla is None else arch.mla.qk_nope_head_dim + arch.mla.v_head_dim
    return 2 * arch.n_layers * arch.n_heads * head_dim * kv.bits // 8


def activation_peak_bytes(
    arch: Architecture,
    act: DType,
    tp: int,
    *,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    together: bool,
    sampler_bytes_per_logit: int,
) -> int:
    """Peak activations of vLLM's profiling pass on one worker (bytes).

    Two parts. The forward over `max_num_batched_tokens` tokens: the widest live tensors of one
    layer, the MLP's gate/up output and its activation (3 x width / tp) plus four d-wide streams
    (residual, normed input, attention output, the layer's output). The sampler over
    min(max_num_seqs, tokens) sequences: [sequences x vocabulary] logits, probabilities and sort
    indices, `sampler_bytes_per_logit` bytes per element, the full vocabulary on every TP rank
    (logits are gathered), so this part does not shrink with TP. vLLM 0.19 logs the same peak
    at TP 1, 2 and 4 (1.89 GiB for Llama-3.1-8B): the sampler dominates it. `together`: the v0
    engine sampled inside the profiled forward, so the parts add; v1 runs them apart (max).
    """
    mlp_width = max(arch.d_ff, arch.n_experts_per_token * arch.d_ff_expert + arch.d_ff_shared)
    per_token = 3 * mlp_width // tp + 4 * arch.d_model
    forward = max_num_batched_tokens * per_token * act.bits // 8
    sampler = min(max_num_seqs, max_num_batched_tokens) * arch.vocab_size * sampler_bytes_per_logit
    return forward + sampler if together else max(forward, sampler)


@dataclass(frozen=True, slots=True)
class Reserve:
    """What one GPU gives up before the KV pool, in vLLM's profile terms (bytes)."""

    activation_bytes: int
    non_torch_bytes: int
    comm_buffer_bytes: int  # 0 at TP = 1
    cuda_graph_bytes: int  # 0 where the vLLM version sizes the KV pool before capturing graphs

    @property
    def total_bytes(self) -> int:
        return self.activation_bytes + self.non_torch_bytes + self.comm_buffer_bytes + self.cuda_graph_bytes


@dataclass(frozen=True, slots=True)
class Layout:
    """How `gpus` split a model: TP inside a node, pipeline stages across nodes."""

    gpus: int
    tensor_parallel_size: int
    pipeline_parallel_size: int


def layout_for(gpus: int, gpus_per_node: int = 8) -> Layout:
    """TP up to a node's GPUs, the rest as pipeline stages (gpus must then be a multiple)."""
    tp = min(gpus, gpus_per_node)
    return Layout(gpus, tp, max(1, gpus // tp))


def layout_problem(arch: Architecture, layout: Layout) -> str | None:
    """Why vLLM would refuse this layout, or None: heads must split evenly over TP ranks."""
    tp = layout.tensor_parallel_size
    if layout.gpus != tp * layout.pipeline_parallel_size:
        return f"{layout.gpus} GPUs are not {tp} (TP) x a whole number of pipeline stages"
    if arch.n_heads % tp:
        return f"{arch.n_heads} attention heads do not split over TP={tp}"
    if arch.mla is None and arch.n_kv_heads % tp and tp % arch.n_kv_heads:
        return f"{arch.n_kv_heads} KV heads neither split over nor replicate evenly to TP={tp}"
    if layout.pipeline_parallel_size > arch.n_layers:
        return f"{layout.pipeline_parallel_size} pipeline stages exceed {arch.n_layers} layers"
    return None


def kv_tokens_from_budget(budget_bytes_per_worker: int, kv_bytes_per_token_worker: int, block_size: int) -> int:
    """Tokens of KV in a per-worker pool: whole blocks of `block_size` tokens, as vLLM allocates."""
    if budget_bytes_per_worker <= 0:
        return 0
    blocks = budget_bytes_per_worker // (kv_bytes_per_token_worker * block_size)
    return blocks * block_size


def kv_budget_bytes_per_worker(
    gpu_memory_bytes: int,
    gpu_memory_utilization: float,
    weights_bytes_total: int,
    gpus: int,
    reserve_bytes: int,
) -> int:
    """The KV pool vLLM leaves on each GPU (negative: the weights and reserve do not fit).

    Weights are taken as split evenly; small replicated tensors (norms, MLA's down-projections)
    are ignored.
    """
    usable = int(gpu_memory_bytes * gpu_memory_utilization)
    return usable - -(-weights_bytes_total // gpus) - reserve_bytes


def max_batch(kv_tokens_capacity: int, context_tokens: int) -> int:
    """Sequences of `context_tokens` whose KV fits at once (vLLM preempts beyond this)."""
    return kv_tokens_capacity // context_tokens
