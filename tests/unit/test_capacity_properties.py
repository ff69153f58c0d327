"""Properties the planner must keep for every model, GPU and input (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from router.capacity import CATALOGUE, GPUS, WEIGHT_DTYPES, plan
from router.capacity.architectures import Architecture
from router.capacity.cost import cost
from router.capacity.dtypes import KV_DTYPES
from router.capacity.memory import (
    kv_bytes_per_token,
    kv_bytes_per_token_per_worker,
    kv_tokens_from_budget,
    weights_bytes,
)
from router.capacity.params import count_params
from router.capacity.plan import PlanInputs

models = st.sampled_from(sorted(CATALOGUE))
gpus = st.sampled_from(sorted(GPUS))
powers_of_two = st.integers(min_value=0, max_value=6).map(lambda e: 2**e)


@st.composite
def dense_architectures(draw: st.DrawFn) -> Architecture:
    kv_heads = draw(st.integers(1, 16))
    return Architecture(
        name="random",
        n_layers=draw(st.integers(1, 128)),
        d_model=draw(st.integers(16, 16384)),
        n_heads=kv_heads * draw(st.integers(1, 8)),
        n_kv_heads=kv_heads,
        head_dim=draw(st.sampled_from([32, 64, 128, 256])),
        d_ff=draw(st.integers(16, 65536)),
        vocab_size=draw(st.integers(1, 262144)),
        tied_embeddings=draw(st.booleans()),
        max_context_tokens=draw(st.integers(128, 262144)),
    )


@given(models, gpus, powers_of_two, powers_of_two, st.sampled_from(["bf16", "fp8", "int4"]))
@settings(max_examples=150, deadline=None)
def test_more_gpus_never_hold_fewer_kv_tokens(model: str, gpu: str, a: int, b: int, dtype: str) -> None:
    few, many = sorted((a, b))
    small = plan(CATALOGUE[model], GPUS[gpu], PlanInputs(dtype=dtype, gpus=few, context_tokens=4096))
    large = plan(CATALOGUE[model], GPUS[gpu], PlanInputs(dtype=dtype, gpus=many, context_tokens=4096))
    assert large.kv_tokens_capacity >= small.kv_tokens_capacity


@given(models)
def test_a_larger_weight_dtype_never_gives_smaller_weights(model: str) -> None:
    params = count_params(CATALOGUE[model])
    by_bits = sorted(WEIGHT_DTYPES.values(), key=lambda d: d.bits)
    sizes = [weights_bytes(params, d) for d in by_bits]
    assert sizes == sorted(sizes)


@given(models, st.sampled_from(sorted(KV_DTYPES)), st.sampled_from(sorted(KV_DTYPES)))
def test_a_larger_kv_dtype_never_gives_fewer_bytes_per_token(model: str, a: str, b: str) -> None:
    small, large = sorted((KV_DTYPES[a], KV_DTYPES[b]), key=lambda d: d.bits)
    arch = CATALOGUE[model]
    assert kv_bytes_per_token(arch, large) >= kv_bytes_per_token(arch, small)


@given(st.integers(0, 2**40), st.integers(1, 2**24), st.sampled_from([1, 16, 128]))
def test_kv_tokens_are_whole_blocks_that_fit_in_the_budget(budget: int, per_token: int, block: int) -> None:
    tokens = kv_tokens_from_budget(budget, per_token, block)
    assert tokens % block == 0
    assert tokens * per_token <= budget
    assert budget - tokens * per_token < block * per_token  # no whole block left unused
    assert kv_tokens_from_budget(budget + per_token * block, per_token, block) == tokens + block


@given(models, powers_of_two)
def test_tp_shards_never_store_less_kv_than_the_unsharded_cache(model: str, tp: int) -> None:
    arch = CATALOGUE[model]
    bf16 = KV_DTYPES["bf16"]
    assert kv_bytes_per_token_per_worker(arch, bf16, tp, 1) * tp >= kv_bytes_per_token(arch, bf16)


@given(dense_architectures())
def test_dense_params_add_up_and_active_equals_total(arch: Architecture) -> None:
    p = count_params(arch)
    d = arch.d_model
    per_layer = 2 * d * arch.n_heads * arch.head_dim + 2 * d * arch.n_kv_heads * arch.head_dim
    per_layer += 3 * d * arch.d_ff + 2 * d
    embeddings = arch.vocab_size * d * (1 if arch.tied_embeddings else 2)
    assert p.total == embeddings + arch.n_layers * per_layer + d
    assert p.active == p.total


@given(models, gpus, st.integers(256, 32768))
@settings(max_examples=100, deadline=None)
def test_max_batch_of_full_context_sequences_fits_in_the_kv_capacity(model: str, gpu: str, ctx: int) -> None:
    result = plan(CATALOGUE[model], GPUS[gpu], PlanInputs(context_tokens=ctx))
    assert result.max_batch * result.context_tokens <= result.kv_tokens_capacity
    assert result.params_active <= result.params_total
    if result.min_gpus is not None:
        assert result.fits
        assert result.min_gpus & (result.min_gpus - 1) == 0  # a power of two


@given(models, gpus, st.integers(256, 8192), st.integers(1, 8192))
@settings(max_examples=100, deadline=None)
def test_longer_prompts_never_reach_the_first_token_sooner(model: str, gpu: str, a: int, b: int) -> None:
    short, long_ = sorted((a, b))
    r1 = plan(CATALOGUE[model], GPUS[gpu], PlanInputs(prompt_tokens=short, context_tokens=8192))
    r2 = plan(CATALOGUE[model], GPUS[gpu], PlanInputs(prompt_tokens=long_, context_tokens=8192))
    assert r2.ttft_ms_estimate >= r1.ttft_ms_estimate


@given(
    st.floats(0.0, 100.0),
    st.integers(1, 64),
    st.floats(0.0, 1000.0),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1e6),
)
def test_used_cost_is_reserved_cost_times_utilization(
    price: float, n: int, hours: float, util: float, rate: float
) -> None:
    c = cost(price, n, hours, util, rate)
    assert abs(c.monthly_cost_usd - c.monthly_cost_reserved_usd * util) <= 1e-9 * max(1.0, c.monthly_cost_reserved_usd)
    assert c.monthly_cost_usd <= c.monthly_cost_reserved_usd + 1e-9
