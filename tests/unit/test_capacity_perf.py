"""Roofline latency: physical ceilings, TP communication, MoE expert reads, latency batch targets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.capacity import CATALOGUE, GPUS, PlanInputs, batch_for_inter_token_latency, plan
from router.capacity.dtypes import WEIGHT_DTYPES
from router.capacity.memory import Layout
from router.capacity.params import count_params
from router.capacity.perf import Efficiency, expected_distinct_experts, matmul_params_per_token, tp_comm_s

dense = st.sampled_from([k for k, a in CATALOGUE.items() if not a.is_moe])
gpus = st.sampled_from(sorted(GPUS))


@given(dense, gpus, st.sampled_from([1, 2, 4, 8]))
@settings(max_examples=60, deadline=None)
def test_decode_never_beats_reading_every_weight_once_per_token(model: str, gpu: str, n: int) -> None:
    result = plan(CATALOGUE[model], GPUS[gpu], PlanInputs(gpus=n, context_tokens=2048))
    ceiling = n * GPUS[gpu].memory_bandwidth_bytes_per_s / result.weights_bytes
    assert result.decode_tokens_per_s_per_seq <= ceiling


@given(st.integers(1, 4096))
def test_moe_reads_between_top_k_and_all_experts(batch: int) -> None:
    arch = CATALOGUE["deepseek-v3"]
    distinct = expected_distinct_experts(arch, batch)
    assert arch.n_experts_per_token <= distinct + 1e-9
    assert distinct <= min(arch.n_routed_experts, arch.n_experts_per_token * batch) + 1e-9


def test_tp_costs_communication_only_beyond_one_gpu() -> None:
    arch, h100 = CATALOGUE["llama-3.3-70b"], GPUS["h100-80gb"]
    bf16 = WEIGHT_DTYPES["bf16"]
    assert tp_comm_s(arch, h100, Layout(1, 1, 1), 64, bf16) == 0.0
    four = tp_comm_s(arch, h100, Layout(4, 4, 1), 64, bf16)
    # Two all-reduces per layer, each 2 (tp - 1) latency-bound ring steps at least.
    assert four >= 2 * arch.n_layers * 6 * h100.link_hop_latency_s
    assert four > tp_comm_s(arch, h100, Layout(2, 2, 1), 64, bf16)  # more hops at TP 4 than at TP 2
    result = plan(arch, h100, PlanInputs(gpus=4, context_tokens=4096))
    assert 0.0 < result.tp_comm_fraction < 0.2


def test_prefill_is_faster_on_more_gpus_and_with_a_higher_mfu() -> None:
    arch, h100 = CATALOGUE["llama-3.1-8b"], GPUS["h100-80gb"]
    one = plan(arch, h100, PlanInputs(gpus=1, prompt_tokens=4096, context_tokens=8192))
    two = plan(arch, h100, PlanInputs(gpus=2, prompt_tokens=4096, context_tokens=8192))
    assert two.ttft_ms_estimate < one.ttft_ms_estimate
    fast = plan(arch, h100, PlanInputs(gpus=1, prompt_tokens=4096, context_tokens=8192, efficiency=Efficiency(0.8)))
    assert fast.ttft_ms_estimate < one.ttft_ms_estimate


def test_a_tighter_inter_token_budget_never_allows_a_larger_batch() -> None:
    arch, h100 = CATALOGUE["llama-3.1-8b"], GPUS["h100-80gb"]
    inputs = PlanInputs(context_tokens=4096)
    budgets = [5.0, 10.0, 20.0, 40.0, 1e6]
    batches = [batch_for_inter_token_latency(arch, h100, inputs, b) for b in budgets]
    assert batches == sorted(batches)
    assert batches[0] == 0  # one sequence already needs more than 5 ms per token here
    assert batches[-1] == plan(arch, h100, inputs).max_batch


def test_efficiency_fractions_outside_0_1_are_refused() -> None:
    with pytest.raises(ValueError, match="efficiency"):
        Efficiency(flops_fraction=1.5)


def test_a_closed_loop_wave_prefills_together_so_the_median_first_token_waits_for_half_of_it() -> None:
    arch, l4 = CATALOGUE["llama-3.2-1b"], GPUS["l4"]

    def ttft_ms(batch: int, *, closed: bool = True, budget: int = 2048) -> float:
        q = PlanInputs(
            gpus=1,
            context_tokens=384,
            prompt_tokens=256,
            batch=batch,
            max_num_batched_tokens=budget,
            output_tokens=128 if closed else None,
        )
        return plan(arch, l4, q).ttft_ms_estimate

    waves = [ttft_ms(b) for b in (1, 2, 4, 8, 16)]
    assert waves == sorted(waves) and waves[0] == ttft_ms(1, closed=False)  # alone: no wave
    # 16 x 256 tokens at 2,048 a step: the first 8 prompts end in step 1, the rest in step 2, so the
    # median first token (between the 8th and 9th) comes later than a wave that fits one step.
    assert ttft_ms(16) > ttft_ms(8)
    matmul = matmul_params_per_token(count_params(arch))
    one_step_of_8_prompts_s = 8 * 256 * 2 * matmul / (l4.bf16_flops * 0.5)
    assert ttft_ms(16) / 1e3 > one_step_of_8_prompts_s
    assert ttft_ms(16) > ttft_ms(16, closed=False)  # the wave costs more than one decode step in flight
