"""Roofline latency: prefill is compute-bound, decode is memory-bandwidth-bound, TP adds all-reduces.

Efficiencies are explicit inputs (`Efficiency`): the fraction of peak dense FLOP/s a prefill
achieves (MFU), the fraction of peak HBM bandwidth a decode step achieves, a fixed cost per
engine step and a fixed server cost before the first token. Defaults (0.5, 0.8, 1 ms, 18 ms)
come from the public points in docs/planner.md (Llama-3.1-8B on an A100-40GB decodes one
sequence at 77 % of the bandwidth ceiling); `tiergate plan --calibrate` fits them to a fleet's
own measurements.

Tensor parallelism: each layer does two all-reduces (after attention and after the MLP) of
tokens x d_model activations. A ring all-reduce takes 2 (tp-1) steps, each a hop latency plus
1/tp of the bytes over a link; at decode batch sizes the latency term dominates and grows with
TP (Llama-3.3-70B on H100s: 160 all-reduces x 6 hops x 3.2 us = 3.1 ms per step at TP=4, a
third of what TP=2 -> 4 saves on weight reads). docs/strategy.md's "10-15 %
overhead, 3.4-3.6x on 4 GPUs" was for pipeline stages; the overhead fraction is reported here.
Pipeline stages run one after another for one sequence, so they add no speed to a single stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.capacity.architectures import Architecture
from router.capacity.dtypes import DType, activation_dtype
from router.capacity.hardware import GPU
from router.capacity.memory import Layout
from router.capacity.params import ParamBreakdown
from router.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Efficiency:
    """Achieved fractions of peak and fixed costs: documented inputs (or a calibration's fit).

    `step_overhead_s` is what every engine step costs beyond the roofline (scheduling, sampling,
    kernel launches between CUDA graphs): Qwen2.5-0.5B on an L4 decodes one sequence in 5.1 ms
    where reading its 0.99 GB of weights takes 3.3 ms at full bandwidth. `server_overhead_s` is
    the fixed time before the first token of a short prompt (HTTP, chat template, tokenizer,
    scheduling); vLLM's own reports put it at 10-15 ms and the same L4 answered a 256-token
    prompt's first token in 27 ms (about 24 ms of it fixed): 18 ms sits between the two.
    """

    flops_fraction: float = 0.5
    bandwidth_fraction: float = 0.8
    step_overhead_s: float = 0.001
    server_overhead_s: float = 0.018

    def __post_init__(self) -> None:
        if not (0 < self.flops_fraction <= 1 and 0 < self.bandwidth_fraction <= 1):
            raise ConfigError("efficiency fractions must lie in (0, 1]")
        if self.step_overhead_s < 0 or self.server_overhead_s < 0:
            raise ConfigError("efficiency overheads must be >= 0 seconds")


def matmul_params_per_token(params: ParamBreakdown) -> int:
    """Active weights a token multiplies through, without the embedding lookup and the output head."""
    return params.active - params.embedding - params.lm_head


def attention_flops(arch: Architecture, prompt_tokens: int) -> float:
    """Causal self-attention score and value FLOPs for one prompt: layers x T^2 x heads x (d_qk + d_v)."""
    if arch.mla is not None:
        dims = arch.mla.qk_nope_head_dim + arch.mla.qk_rope_head_dim + arch.mla.v_head_dim
    else:
        dims = 2 * arch.head_dim
    return float(arch.n_layers) * prompt_tokens * prompt_tokens * arch.n_heads * dims


def allreduce_s(gpu: GPU, tp: int, payload_bytes: float) -> float:
    """One ring all-reduce over `tp` GPUs of `payload_bytes`: 2 (tp - 1) latency-bound steps, each
    moving 1/tp of the payload (so 2 (tp - 1) / tp of it crosses every link)."""
    if tp <= 1:
        return 0.0
    steps = 2 * (tp - 1)
    return steps * gpu.link_hop_latency_s + steps / tp * payload_bytes / gpu.link_bytes_per_s


def tp_comm_s(arch: Architecture, gpu: GPU, layout: Layout, tokens: int, act: DType) -> float:
    """All-reduce time of one forward pass over `tokens` tokens (two per layer)."""
    payload = tokens * arch.d_model * act.bits / 8
    return 2 * arch.n_layers * allreduce_s(gpu, layout.tensor_parallel_size, payload)


def ttft_s(
    arch: Architecture,
    params: ParamBreakdown,
    gpu: GPU,
    weights: DType,
    layout: Layout,
    prompt_tokens: int,
    eff: Efficiency,
) -> float:
    """Time to first token for one prompt alone: fixed server and step costs, prefill FLOPs at MFU,
    TP all-reduces."""
    flops = 2.0 * matmul_params_per_token(params) * prompt_tokens
    flops += attention_flops(arch, prompt_tokens)
    flops += 2.0 * arch.vocab_size * arch.d_model  # the head, for the last position only
    rate = gpu.peak_flops(weights.compute) * eff.flops_fraction * layout.tensor_parallel_size
    comm = tp_comm_s(arch, gpu, layout, prompt_tokens, activation_dtype(weights))
    return eff.server_overhead_s + eff.step_overhead_s + flops / rate + comm


def expected_distinct_experts(arch: Architecture, batch: int) -> float:
    """Routed experts one MoE layer reads for `batch` tokens, routing taken as uniform."""
    if not arch.is_moe:
        return 0.0
    e, k = arch.n_routed_experts, arch.n_experts_per_token
    return e * (1.0 - (1.0 - k / e) ** batch)


@dataclass(frozen=True, slots=True)
class DecodeStep:
    """One decode step of `batch` sequences at `context_tokens` each."""

    step_s: float
    memory_s: float
    compute_s: float
    comm_s: float

    @property
    def comm_fraction(self) -> float:
        return self.comm_s / self.step_s if self.step_s else 0.0


def decode_step(
    arch: Architecture,
    params: ParamBreakdown,
    gpu: GPU,
    weights: DType,
    weights_total_bytes: int,
    kv_bytes_per_token_total: int,
    layout: Layout,
    batch: int,
    context_tokens: int,
    eff: Efficiency,
    prefill_tokens: float = 0.0,
) -> DecodeStep:
    """Step time = max(bytes read / bandwidth, FLOPs / compute) + all-reduces + fixed step cost.

    `prefill_tokens`: prompt tokens the scheduler mixes into the step under load (chunked
    prefill shares each step between new prompts and running decodes); their FLOPs join the
    compute side and their activations the all-reduces.

    Bytes read: every weight a batch touches (for MoE, the non-expert weights plus the expected
    distinct routed experts) and the whole KV of every sequence at `context_tokens` (the
    conservative end: all sequences at full length). `kv_bytes_per_token_total` is summed over
    workers, so replicated KV heads are read on every rank that holds them.
    """
    batch = max(batch, 1)
    expert_bytes_each = params.routed_expert_each * weights_total_bytes / max(params.total, 1)
    unread_experts = arch.n_routed_experts - expected_distinct_experts(arch, batch)
    weights_read = weights_total_bytes - arch.n_moe_layers * unread_experts * expert_bytes_each
    kv_read = batch * context_tokens * kv_bytes_per_token_total
    # TP ranks read in parallel; pipeline stages take turns, so only TP divides the time.
    bandwidth = gpu.memory_bandwidth_bytes_per_s * eff.bandwidth_fraction * layout.tensor_parallel_size
    memory_s = (weights_read + kv_read) / bandwidth
    tokens = batch + prefill_tokens
    flops = 2.0 * params.active * tokens + 4.0 * batch * context_tokens * arch.n_heads * arch.head_dim * arch.n_layers
    compute_s = flops / (gpu.peak_flops(weights.compute) * eff.flops_fraction * layout.tensor_parallel_size)
    comm = tp_comm_s(arch, gpu, layout, int(tokens), activation_dtype(weights))
    step = max(memory_s, compute_s) + comm + eff.step_overhead_s
    return DecodeStep(step, memory_s, compute_s, comm)
