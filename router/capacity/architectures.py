"""The numbers that size a decoder-only transformer, a built-in catalogue, and HF config dicts.

Only what sizing needs is kept. The catalogue's numbers are those of each model's published
Hugging Face `config.json`. `from_hf_config` takes the parsed dict (the caller reads the file;
router/ does no I/O) and covers Llama-style dense models (llama, mistral, qwen2), Mixtral-style
MoE and DeepSeek-V3 (MoE with shared experts and multi-head latent attention, MLA).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from router.errors import ConfigError

AttentionBias = Literal["none", "qkv", "qkvo"]


class ArchitectureError(ConfigError):
    """An unknown catalogue key or a config dict that cannot be sized; the message says which."""


@dataclass(frozen=True, slots=True)
class MLASpec:
    """DeepSeek's multi-head latent attention: low-rank Q and a compressed, shared KV latent.

    `q_lora_rank` 0 means Q is a plain projection (DeepSeek-V2-Lite). The KV cache holds, per
    token and layer, the latent (`kv_lora_rank`) plus the shared rotary key (`qk_rope_head_dim`).
    """

    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True, slots=True)
class Architecture:
    """Sizing numbers of one model. MoE fields stay 0 for dense models.

    `n_dense_layers` is, in a MoE model, how many leading layers keep a dense MLP of width `d_ff`
    (DeepSeek-V3's first_k_dense_replace = 3); the rest are MoE with `n_routed_experts` experts of
    width `d_ff_expert`, `n_experts_per_token` routed per token, and always-on shared experts of
    total width `d_ff_shared`. `n_mtp_layers` multi-token-prediction modules are counted apart.
    """

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab_size: int
    tied_embeddings: bool
    max_context_tokens: int
    n_routed_experts: int = 0
    n_experts_per_token: int = 0
    d_ff_expert: int = 0
    d_ff_shared: int = 0
    n_dense_layers: int = 0
    router_bias: bool = False
    attention_bias: AttentionBias = "none"
    mla: MLASpec | None = None
    n_mtp_layers: int = 0

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "vocab_size"):
            if getattr(self, name) < 1:
                raise ArchitectureError(f"{self.name}: {name} must be >= 1")
        if self.max_context_tokens < 1:
            raise ArchitectureError(f"{self.name}: max_context_tokens must be >= 1")
        if self.n_heads % self.n_kv_heads:
            raise ArchitectureError(
                f"{self.name}: n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}"
            )
        if self.is_moe:
            if not 1 <= self.n_experts_per_token <= self.n_routed_experts or self.d_ff_expert < 1:
                raise ArchitectureError(f"{self.name}: MoE needs 1 <= top-k <= experts and d_ff_expert >= 1")
            if not 0 <= self.n_dense_layers < self.n_layers:
                raise ArchitectureError(f"{self.name}: n_dense_layers must lie in [0, n_layers)")
            if self.n_dense_layers and self.d_ff < 1:
                raise ArchitectureError(f"{self.name}: dense layers need d_ff >= 1")
        elif self.d_ff < 1:
            raise ArchitectureError(f"{self.name}: a dense model needs d_ff >= 1")

    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts > 0

    @property
    def n_moe_layers(self) -> int:
        return self.n_layers - self.n_dense_layers if self.is_moe else 0


_DEEPSEEK_V3_MLA = MLASpec(
    q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128
)

CATALOGUE: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("smollm2-135m", 30, 576, 9, 3, 64, 1536, 49152, True, 8192),
        Architecture("llama-3.2-1b", 16, 2048, 32, 8, 64, 8192, 128256, True, 131072),
        Architecture("llama-2-7b", 32, 4096, 32, 32, 128, 11008, 32000, False, 4096),
        Architecture("llama-3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256, False, 131072),
        Architecture("llama-2-70b", 80, 8192, 64, 8, 128, 28672, 32000, False, 4096),
        Architecture("llama-3.3-70b", 80, 8192, 64, 8, 128, 28672, 128256, False, 131072),
        Architecture(
            "mixtral-8x7b", 32, 4096, 32, 8, 128, 0, 32000, False, 32768,
            n_routed_experts=8, n_experts_per_token=2, d_ff_expert=14336,
        ),
        Architecture(
            # head_dim is nominal here: MLA's own dimensions (mla=...) size attention and KV.
            "deepseek-v3", 61, 7168, 128, 128, 192, 18432, 129280, False, 163840,
            n_routed_experts=256, n_experts_per_token=8, d_ff_expert=2048, d_ff_shared=2048,
            n_dense_layers=3, router_bias=True, mla=_DEEPSEEK_V3_MLA, n_mtp_layers=1,
        ),
    )
}  # fmt: skip


def catalogue_architecture(key: str) -> Architecture:
    """The built-in architecture `key` (lower case with dashes, e.g. 'llama-3.3-70b')."""
    try:
        return CATALOGUE[key.lower()]
    except KeyError:
        raise ArchitectureError(
            f"unknown model {key!r}; catalogue: {', '.join(CATALOGUE)} (or a config.json path)"
        ) from None


def _int(cfg: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = cfg.get(key, default)
    if value is None:
        raise ArchitectureError(f"config has no {key!r}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArchitectureError(f"config {key!r} must be an integer, got {value!r}")
    return value


def from_hf_config(cfg: Mapping[str, Any], name: str | None = None) -> Architecture:
    """An `Architecture` from a parsed Hugging Face `config.json` dict.

    Raises ArchitectureError naming the missing or malformed key. Layer-interleaved MoE
    (moe_layer_freq > 1) and non-RMSNorm models are not modelled and are refused.
    """
    model_type = str(cfg.get("model_type", ""))
    label = name or str(cfg.get("_name_or_path") or model_type or "config")
    if _int(cfg, "moe_layer_freq", 1) != 1:
        raise ArchitectureError(f"{label}: moe_layer_freq != 1 is not modelled")
    d_model = _int(cfg, "hidden_size")
    n_heads = _int(cfg, "num_attention_heads")
    n_routed = _int(cfg, "n_routed_experts", 0) or _int(cfg, "num_local_experts", 0) or _int(cfg, "num_experts", 0)
    moe_width = _int(cfg, "moe_intermediate_size", 0) or (_int(cfg, "intermediate_size") if n_routed else 0)
    mla = None
    if cfg.get("kv_lora_rank"):
        mla = MLASpec(
            q_lora_rank=_int(cfg, "q_lora_rank", 0),
            kv_lora_rank=_int(cfg, "kv_lora_rank"),
            qk_nope_head_dim=_int(cfg, "qk_nope_head_dim"),
            qk_rope_head_dim=_int(cfg, "qk_rope_head_dim"),
            v_head_dim=_int(cfg, "v_head_dim"),
        )
    if model_type == "qwen2":
        bias: AttentionBias = "qkv"  # Qwen2 always carries q/k/v biases, with no config key for it
    else:
        bias = "qkvo" if cfg.get("attention_bias") else "none"
    head_dim = cfg.get("head_dim") or d_model // n_heads
    if mla is not None:
        head_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    # Mixtral-style configs give only the expert width as intermediate_size; there is no dense MLP.
    dense_ff = _int(cfg, "intermediate_size", 0) if (not n_routed or cfg.get("moe_intermediate_size")) else 0
    return Architecture(
        name=label,
        n_layers=_int(cfg, "num_hidden_layers"),
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=_int(cfg, "num_key_value_heads", n_heads),
        head_dim=int(head_dim),
        d_ff=dense_ff,
        vocab_size=_int(cfg, "vocab_size"),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        max_context_tokens=_int(cfg, "max_position_embeddings"),
        n_routed_experts=n_routed,
        n_experts_per_token=_int(cfg, "num_experts_per_tok", 0) if n_routed else 0,
        d_ff_expert=moe_width if n_routed else 0,
        d_ff_shared=_int(cfg, "n_shared_experts", 0) * moe_width if n_routed else 0,
        n_dense_layers=_int(cfg, "first_k_dense_replace", 0) if n_routed else 0,
        router_bias=cfg.get("topk_method") == "noaux_tc",
        attention_bias=bias,
        mla=mla,
        n_mtp_layers=_int(cfg, "num_nextn_predict_layers", 0),
    )
