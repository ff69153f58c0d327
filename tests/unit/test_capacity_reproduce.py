"""Every "must reproduce" figure of the planner issue, and the corrections to docs/strategy.md's figures."""

from __future__ import annotations

import pytest

from router.capacity import plan
from router.capacity.architectures import CATALOGUE, from_hf_config
from router.capacity.cost import cost, monthly_cost_usd
from router.capacity.dtypes import WEIGHT_DTYPES, kv_dtype
from router.capacity.hardware import GPUS
from router.capacity.memory import GIB, kv_bytes_per_token, mha_kv_bytes_per_token, weights_bytes
from router.capacity.params import count_params, rough_active_estimate, rough_params_estimate
from router.capacity.plan import PlanInputs, kv_tokens_for_budget
from tests.unit.capacity_configs import DEEPSEEK_V3, MIXTRAL_8X7B, SMOLLM2_135M


def test_llama2_7b_has_the_published_6_74b_parameters() -> None:
    p = count_params(CATALOGUE["llama-2-7b"])
    assert p.total == 6_738_415_616  # the checkpoint's tensor sizes summed
    assert round(p.total / 1e9, 2) == 6.74
    assert p.active == p.total


def test_llama2_7b_weights_fp16_13_5gb_int8_half_int4_quarter_plus_scales() -> None:
    params = count_params(CATALOGUE["llama-2-7b"])
    fp16 = weights_bytes(params, WEIGHT_DTYPES["fp16"])
    int8 = weights_bytes(params, WEIGHT_DTYPES["int8"])
    int4 = weights_bytes(params, WEIGHT_DTYPES["int4"])
    assert fp16 == 2 * params.total
    assert fp16 / 1e9 == pytest.approx(13.5, abs=0.05)
    # About half: the linear layers halve, the 16-bit embedding and head (0.26 B) do not.
    assert 0.5 < int8 / fp16 < 0.53
    # About a quarter plus group scales, and more with 16-bit embeddings.
    assert 0.25 < int4 / fp16 < 0.30
    all_int4 = weights_bytes(params, WEIGHT_DTYPES["int4"], quantize_embeddings=True)
    quarter = params.total * 0.5
    # Scale + zero point per 128 weights: (16 + 4) / 128 bits over 4 bits = 3.9 % (norms stay 16-bit).
    assert (all_int4 - quarter) / quarter == pytest.approx(20 / 128 / 4, abs=1e-3)
    assert weights_bytes(params, WEIGHT_DTYPES["int8"], quantize_embeddings=True) == pytest.approx(
        params.total, rel=1e-4
    )


def test_rough_70b_estimate_is_64_4b_beside_exact_llama2_70b() -> None:
    arch = CATALOGUE["llama-2-70b"]
    assert rough_params_estimate(arch) == 12 * 80 * 8192**2
    assert round(rough_params_estimate(arch) / 1e9, 1) == 64.4
    exact = count_params(arch).total
    assert exact == 68_976_648_192
    assert (rough_params_estimate(arch) - exact) / exact == pytest.approx(-0.066, abs=0.001)


def test_tco_matches_the_strategy_docs_518_40_and_4608() -> None:
    assert monthly_cost_usd(1.2, 1, 720, 0.6) == pytest.approx(518.4)
    assert monthly_cost_usd(4.0, 2, 720, 0.8) == pytest.approx(4608.0)
    reserved = cost(4.0, 2, 720, 0.8, tokens_per_s_aggregate=100.0)
    assert reserved.monthly_cost_reserved_usd == pytest.approx(5760.0)


def test_deepseek_v3_671b_total_37b_active_mtp_apart() -> None:
    arch = CATALOGUE["deepseek-v3"]
    p = count_params(arch)
    assert p.total / 1e9 == pytest.approx(671.0, abs=0.5)
    assert 37.0e9 < p.active < 38.0e9
    # docs/strategy.md's rule total / experts is off by more than 10x.
    assert rough_active_estimate(arch, p.total) / 1e9 == pytest.approx(2.62, abs=0.01)
    # The released checkpoint (685 B) = main model + MTP module + its copies of embedding and head.
    assert (p.total + p.mtp_module + p.embedding + p.embedding) / 1e9 == pytest.approx(684.5, abs=0.5)


def test_mixtral_active_is_top2_experts_plus_shared_parts_not_total_over_8() -> None:
    p = count_params(CATALOGUE["mixtral-8x7b"])
    assert p.total / 1e9 == pytest.approx(46.7, abs=0.05)
    assert p.active / 1e9 == pytest.approx(12.9, abs=0.05)
    assert p.total // 8 < 0.5 * p.active


def test_smollm2_exact_count_134_5m_with_tied_embeddings() -> None:
    p = count_params(CATALOGUE["smollm2-135m"])
    assert p.total == 134_515_008
    assert p.lm_head == 0
    assert p.total / 1e6 == pytest.approx(134.5, abs=0.05)


def test_gqa_kv_cache_is_8x_smaller_than_the_notes_formula_for_llama3_70b() -> None:
    arch = CATALOGUE["llama-3.3-70b"]
    bf16 = kv_dtype("bf16")
    assert kv_bytes_per_token(arch, bf16) == 2 * 80 * 8 * 128 * 2
    assert mha_kv_bytes_per_token(arch, bf16) == 8 * kv_bytes_per_token(arch, bf16)
    assert kv_bytes_per_token(arch, kv_dtype("fp8")) * 2 == kv_bytes_per_token(arch, bf16)


def test_deepseek_mla_caches_the_576_wide_latent_per_layer() -> None:
    assert kv_bytes_per_token(CATALOGUE["deepseek-v3"], kv_dtype("bf16")) == 61 * (512 + 64) * 2


def test_smollm2_1gib_bf16_kv_holds_the_46592_tokens_vllm_reported() -> None:
    assert kv_tokens_for_budget(CATALOGUE["smollm2-135m"], "bf16", GIB) == 46_592


def test_gpu_memory_is_the_drivers_mib_not_marketing_gb() -> None:
    assert GPUS["h100-80gb"].memory_bytes == 81559 * 2**20
    assert GPUS["h100-80gb"].memory_bytes / 1e9 == pytest.approx(85.52, abs=0.01)
    assert GPUS["a100-80gb"].memory_bytes == 80 * GIB
    assert GPUS["h200"].memory_bytes / GIB == pytest.approx(140.4, abs=0.01)


def test_llama33_70b_bf16_on_h100_needs_tp4_at_full_context() -> None:
    result = plan(CATALOGUE["llama-3.3-70b"], GPUS["h100-80gb"], PlanInputs(dtype="bf16"))
    assert result.min_gpus == 4
    assert result.tensor_parallel_size == 4
    assert result.fits
    assert result.max_batch >= 1
    two = plan(CATALOGUE["llama-3.3-70b"], GPUS["h100-80gb"], PlanInputs(dtype="bf16", gpus=2))
    assert not two.fits
    assert 0 < two.kv_tokens_capacity < 131072


def test_fp16_llama2_70b_on_two_a100_80gb_fits_with_little_kv_left() -> None:
    result = plan(CATALOGUE["llama-2-70b"], GPUS["a100-80gb"], PlanInputs(dtype="fp16", gpus=2))
    assert result.fits
    assert 30_000 < result.kv_tokens_capacity < 45_000
    assert result.kv_budget_bytes_per_gpu < 0.1 * result.gpu_memory_bytes


def test_fp16_7b_on_a10_decodes_below_the_notes_50_to_100_tokens_per_s() -> None:
    # The bandwidth ceiling: every weight is read once per token.
    a10 = GPUS["a10"]
    ceiling = a10.memory_bandwidth_bytes_per_s / (2 * count_params(CATALOGUE["llama-2-7b"]).total)
    assert ceiling < 50
    result = plan(CATALOGUE["llama-2-7b"], a10, PlanInputs(dtype="fp16"))
    assert result.decode_tokens_per_s_per_seq < ceiling


@pytest.mark.parametrize(
    ("config", "key"),
    [(SMOLLM2_135M, "smollm2-135m"), (MIXTRAL_8X7B, "mixtral-8x7b"), (DEEPSEEK_V3, "deepseek-v3")],
)
def test_hf_config_gives_the_catalogues_counts(config: dict[str, object], key: str) -> None:
    from_config = count_params(from_hf_config(config, name=key))
    assert from_config == count_params(CATALOGUE[key])
