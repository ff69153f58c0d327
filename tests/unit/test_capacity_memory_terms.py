"""vLLM's memory-profile terms: what grows with TP, what does not, and what each version takes out."""

from __future__ import annotations

import pytest

from router.capacity import CATALOGUE, GPUS, PlanInputs, plan
from router.capacity.dtypes import WEIGHT_DTYPES
from router.capacity.hardware import GPU
from router.capacity.memory import GIB
from router.capacity.plan import reserve
from router.capacity.vllm_versions import VllmVersionError, vllm_version

ARCH, H100 = CATALOGUE["llama-3.1-8b"], GPUS["h100-80gb"]
BF16 = WEIGHT_DTYPES["bf16"]


def test_activation_peak_does_not_shrink_with_tp_and_buffers_appear_beyond_one_gpu() -> None:
    one, two, four = (reserve(ARCH, H100, BF16, tp, 8192, PlanInputs()) for tp in (1, 2, 4))
    assert one.activation_bytes == two.activation_bytes == four.activation_bytes  # the sampler's peak
    assert one.comm_buffer_bytes == 0 < two.comm_buffer_bytes == four.comm_buffer_bytes
    # vLLM 0.19 logged 1.89 GiB for this model at TP 1, 2 and 4.
    assert one.activation_bytes / GIB == pytest.approx(1.89, rel=0.05)


def test_the_sampler_peak_scales_with_max_num_seqs_and_vocabulary() -> None:
    few = reserve(ARCH, H100, BF16, 1, 8192, PlanInputs(max_num_seqs=256)).activation_bytes
    many = reserve(ARCH, H100, BF16, 1, 8192, PlanInputs(max_num_seqs=1024)).activation_bytes
    assert many > few
    small_vocab = reserve(CATALOGUE["llama-2-7b"], H100, BF16, 1, 4096, PlanInputs()).activation_bytes
    assert small_vocab < many


def test_cuda_graphs_come_out_of_the_budget_only_where_the_version_does_so() -> None:
    base = PlanInputs(gpus=1, context_tokens=8192, cuda_graph_bytes_per_gpu=GIB)
    v19 = plan(ARCH, H100, base)
    v20 = plan(ARCH, H100, PlanInputs(gpus=1, context_tokens=8192, cuda_graph_bytes_per_gpu=GIB, vllm_version="0.20"))
    assert v20.reserve_bytes_per_gpu - v19.reserve_bytes_per_gpu == GIB
    assert v20.kv_tokens_capacity < v19.kv_tokens_capacity


def test_vllm_multiplies_the_cuda_visible_total_not_nvmls() -> None:
    nvml_sized = GPU(**{**{f: getattr(H100, f) for f in H100.__slots__}, "cuda_memory_bytes": H100.memory_bytes})
    assert (
        plan(ARCH, nvml_sized, PlanInputs(context_tokens=8192)).kv_tokens_capacity
        > plan(ARCH, H100, PlanInputs(context_tokens=8192)).kv_tokens_capacity
    )


@pytest.mark.parametrize(
    ("given", "line"), [("0.6.5", "0.6"), ("v0.10.1", "0.19"), ("0.19.0", "0.19"), ("0.21", "0.20")]
)
def test_release_strings_pick_their_line(given: str, line: str) -> None:
    assert vllm_version(given).key == line


def test_an_unknown_version_names_the_known_ones() -> None:
    with pytest.raises(VllmVersionError, match=r"0\.19"):
        vllm_version("1.4")


def test_cuda_totals_sit_just_below_nvml_and_say_whether_a_log_showed_them() -> None:
    for g in GPUS.values():
        gap_gib = (g.memory_bytes - g.cuda_memory_bytes) / GIB
        assert 0.1 < gap_gib < 0.8, g.key  # driver reservations: 0.19 GiB on an A10G, 0.46 on an H100, 0.59 on an H200
    # Observed in a start-up log: the H200's 139.81 GiB; still estimated from a sibling: A100-80GB and L4.
    assert GPUS["h200"].cuda_memory_observed
    assert not GPUS["a100-80gb"].cuda_memory_observed and not GPUS["l4"].cuda_memory_observed
