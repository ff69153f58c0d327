"""Exact parameter counts from an architecture, beside docs/strategy.md's rough estimates.

Counted per weight tensor as the Hugging Face checkpoints store them (RMSNorm weights only, no
biases unless the architecture has them). For Llama-2-7B this gives 6,738,415,616, the published
6.74 B. The strategy document's `P ~= 12 * L * d^2` assumes a 4d-wide non-gated MLP and full multi-head K/V
and ignores embeddings: for Llama-2-70B it says 64.42 B against 68.98 B exact (-6.6 %). SwiGLU's
three 28,672-wide matrices are 31 % more than a 4d MLP's 8 d^2 (+13.4 B), grouped-query attention
(8 KV heads of 64) saves 9.4 B, and embedding + head add 0.52 B.

Its MoE rule, active = total / number of experts, is wrong: a token uses every
non-expert weight (attention, embeddings, shared experts, dense layers) plus its top-k routed
experts. DeepSeek-V3: 671.0 B total, 37.6 B active by the architecture (5.6 %), against
671 / 256 = 2.6 B by that rule. Mixtral-8x7B: 46.7 B total, 12.9 B active, not 5.8 B.

DeepSeek-V3's multi-token-prediction (MTP) module is reported apart, as DeepSeek does (671 B
main model + MTP): one more MoE layer, two norms and a 2d -> d projection, 11.6 B unique
weights; its checkpoint also stores copies of the embedding and output head (685 B in all).
"""

from __future__ import annotations

from dataclasses import dataclass

from router.capacity.architectures import Architecture


@dataclass(frozen=True, slots=True)
class ParamBreakdown:
    """Parameter counts by part, all layers summed. `total` excludes the MTP module."""

    embedding: int
    lm_head: int  # 0 when tied to the embedding
    attention: int
    dense_mlp: int
    routed_experts: int
    shared_experts: int
    moe_router: int
    norms: int
    mtp_module: int  # unique weights of the multi-token-prediction layers, not in total
    routed_expert_each: int  # one expert of one layer
    active: int

    @property
    def total(self) -> int:
        return (
            self.embedding
            + self.lm_head
            + self.attention
            + self.dense_mlp
            + self.routed_experts
            + self.shared_experts
            + self.moe_router
            + self.norms
        )

    @property
    def linear(self) -> int:
        """Weights of the transformer blocks' linear layers: what weight quantization compresses.

        Embeddings, the output head, norms and MoE routers stay 16-bit in vLLM's quantized checkpoints.
        """
        return self.attention + self.dense_mlp + self.routed_experts + self.shared_experts


def attention_params_per_layer(arch: Architecture) -> int:
    """Weights (and biases, if any) of one attention block; exact for MLA."""
    d = arch.d_model
    mla = arch.mla
    if mla is not None:
        qk_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        if mla.q_lora_rank:
            # q_a_proj, q_a_layernorm, q_b_proj
            q = d * mla.q_lora_rank + mla.q_lora_rank + mla.q_lora_rank * arch.n_heads * qk_dim
        else:
            q = d * arch.n_heads * qk_dim
        kv_a = d * (mla.kv_lora_rank + mla.qk_rope_head_dim) + mla.kv_lora_rank  # + kv_a_layernorm
        kv_b = mla.kv_lora_rank * arch.n_heads * (mla.qk_nope_head_dim + mla.v_head_dim)
        o = arch.n_heads * mla.v_head_dim * d
        return q + kv_a + kv_b + o
    q_width = arch.n_heads * arch.head_dim
    kv_width = arch.n_kv_heads * arch.head_dim
    weights = d * q_width + 2 * d * kv_width + q_width * d
    bias = 0
    if arch.attention_bias in ("qkv", "qkvo"):
        bias += q_width + 2 * kv_width
    if arch.attention_bias == "qkvo":
        bias += d
    return weights + bias


def swiglu_params(d_model: int, d_ff: int) -> int:
    """gate, up and down projections of a SwiGLU MLP, no biases."""
    return 3 * d_model * d_ff


def moe_layer_parts(arch: Architecture) -> tuple[int, int, int]:
    """(all routed experts, shared experts, router) of one MoE layer."""
    routed = arch.n_routed_experts * swiglu_params(arch.d_model, arch.d_ff_expert)
    shared = swiglu_params(arch.d_model, arch.d_ff_shared) if arch.d_ff_shared else 0
    router = arch.n_routed_experts * arch.d_model + (arch.n_routed_experts if arch.router_bias else 0)
    return routed, shared, router


def count_params(arch: Architecture) -> ParamBreakdown:
    """Exact counts by part, and active parameters per token (shared + top-k routed + the rest)."""
    d, n_layers = arch.d_model, arch.n_layers
    embedding = arch.vocab_size * d
    lm_head = 0 if arch.tied_embeddings else arch.vocab_size * d
    attn_layer = attention_params_per_layer(arch)
    attention = n_layers * attn_layer
    n_dense = n_layers - arch.n_moe_layers
    dense_mlp = n_dense * swiglu_params(d, arch.d_ff)
    routed_layer, shared_layer, router_layer = moe_layer_parts(arch)
    routed = arch.n_moe_layers * routed_layer
    shared = arch.n_moe_layers * shared_layer
    router = arch.n_moe_layers * router_layer
    norms = n_layers * 2 * d + d  # two RMSNorms per layer and the final one
    expert_each = swiglu_params(d, arch.d_ff_expert) if arch.is_moe else 0
    total = embedding + lm_head + attention + dense_mlp + routed + shared + router + norms
    active = total - routed + arch.n_moe_layers * arch.n_experts_per_token * expert_each
    mtp = 0
    if arch.n_mtp_layers:
        # Each MTP module: one decoder layer (MoE if the model is), enorm, hnorm, eh_proj (2d -> d)
        # and the shared head's norm; embedding and head are shared with the main model.
        moe_mlp = routed_layer + shared_layer + router_layer if arch.is_moe else swiglu_params(d, arch.d_ff)
        layer = attn_layer + moe_mlp + 2 * d
        mtp = arch.n_mtp_layers * (layer + 3 * d + 2 * d * d)
    return ParamBreakdown(
        embedding=embedding,
        lm_head=lm_head,
        attention=attention,
        dense_mlp=dense_mlp,
        routed_experts=routed,
        shared_experts=shared,
        moe_router=router,
        norms=norms,
        mtp_module=mtp,
        routed_expert_each=expert_each,
        active=active,
    )


def rough_params_estimate(arch: Architecture) -> int:
    """docs/strategy.md's rough `P ~= 12 * L * d^2` (attention 4 d^2 + a 4d-wide MLP 8 d^2 per layer)."""
    return 12 * arch.n_layers * arch.d_model**2


def rough_active_estimate(arch: Architecture, total: int) -> int:
    """docs/strategy.md's rough MoE rule, total / number of experts (wrong; kept to show the gap)."""
    return total // arch.n_routed_experts if arch.is_moe else total
