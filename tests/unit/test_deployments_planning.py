"""deployments.planning: engine limits derived from the planner, refusals that carry the numbers."""

from __future__ import annotations

import re
from typing import Any

import pytest

from deployments.planning import TierPlanningError, derive_engine_limits, kv_tokens_capacity
from deployments.profile import TierSpec, load_profile
from router.capacity import CATALOGUE
from router.capacity.memory import CPU_BLOCK_SIZE_TOKENS
from router.capacity.plan import kv_tokens_for_budget


def _tier(name: str = "t", context: int = 32768, **serving: Any) -> TierSpec:
    spec: dict[str, Any] = {"model_source": "m", "dtype": "bfloat16", "accelerator": "h100-80gb", **serving}
    return TierSpec.model_validate(
        {
            "name": name,
            "endpoint": "http://127.0.0.1:9/v1",
            "upstream_model": name,
            "context_length_tokens": context,
            "serving": spec,
        }
    )


def test_gpu_profile_derives_tp4_for_70b_and_tp1_for_8b_and_1b() -> None:
    tiers = {t.name: derive_engine_limits(t) for t in load_profile("gpu-h100", apply_env=False).tiers}
    assert tiers["small"].tensor_parallel_size == 1
    assert tiers["medium"].tensor_parallel_size == 1
    large = tiers["large"]
    assert large.tensor_parallel_size == 4
    assert large.max_model_len == 32768
    assert large.kv_tokens_capacity >= 32768
    assert 1 <= large.max_num_seqs <= 256
    assert large.gpu_memory_utilization == pytest.approx(0.9)


def test_70b_at_full_128k_context_still_derives_tp4() -> None:
    limits = derive_engine_limits(_tier(context=131072, architecture="llama-3.3-70b"))
    assert limits.tensor_parallel_size == 4
    assert limits.kv_tokens_capacity >= 131072


def test_a_given_tp_too_small_is_refused_with_the_numbers() -> None:
    tier = _tier(architecture="llama-3.3-70b", tensor_parallel_size=2)
    with pytest.raises(TierPlanningError) as err:
        derive_engine_limits(tier)
    message = str(err.value)
    assert "TP=2" in message
    assert "smallest that fits is TP=4" in message
    assert re.search(r"holds [\d,]+ tokens", message)


def test_a_tp_that_does_not_split_the_heads_is_refused() -> None:
    with pytest.raises(TierPlanningError, match="do not split over TP=3"):
        derive_engine_limits(_tier(architecture="llama-3.1-8b", tensor_parallel_size=3))


def test_given_limits_are_kept() -> None:
    tier = _tier(architecture="llama-3.1-8b", max_num_seqs=32, gpu_memory_utilization=0.8, max_model_len_tokens=8192)
    limits = derive_engine_limits(tier)
    assert (limits.max_num_seqs, limits.gpu_memory_utilization, limits.max_model_len) == (32, 0.8, 8192)


def test_lower_gpu_memory_utilization_never_holds_more_kv() -> None:
    high = derive_engine_limits(_tier(architecture="llama-3.1-8b", gpu_memory_utilization=0.9))
    low = derive_engine_limits(_tier(architecture="llama-3.1-8b", gpu_memory_utilization=0.6))
    assert low.kv_tokens_capacity < high.kv_tokens_capacity


def test_a_model_needing_more_than_a_node_is_refused() -> None:
    with pytest.raises(TierPlanningError, match="more than one node"):
        derive_engine_limits(_tier(architecture="deepseek-v3", context=4096))


def test_context_beyond_the_architecture_is_refused() -> None:
    with pytest.raises(TierPlanningError, match="maximum context of 4,096"):
        derive_engine_limits(_tier(architecture="llama-2-7b", context=8192))


def test_unknown_accelerator_and_architecture_list_the_valid_keys() -> None:
    with pytest.raises(TierPlanningError, match="h100-80gb"):
        derive_engine_limits(_tier(architecture="llama-2-7b", context=4096, accelerator="tpu-v5"))
    with pytest.raises(TierPlanningError, match=r"llama-3\.3-70b"):
        derive_engine_limits(_tier(architecture="gpt-9", context=4096))


def test_local_cpu_tier_capacity_is_its_fp32_kv_pool_in_whole_blocks() -> None:
    small = load_profile("local-cpu", apply_env=False).tiers[0]
    limits = derive_engine_limits(small)
    assert limits.accelerator == "cpu"
    assert limits.kv_dtype == "fp32"  # vLLM's 'auto' KV dtype follows the float32 weights
    assert limits.kv_tokens_capacity == kv_tokens_for_budget(
        CATALOGUE["smollm2-135m"], "fp32", 2**30, block_size_tokens=CPU_BLOCK_SIZE_TOKENS
    )
    assert limits.kv_tokens_capacity == 46_592 // 2  # fp32 halves what bf16 held
    assert limits.max_num_seqs == 8  # given in the profile


def test_a_cpu_kv_pool_too_small_for_one_sequence_is_refused_with_the_size_needed() -> None:
    tier = _tier(context=8192, architecture="smollm2-135m", accelerator="cpu", kv_cache_space_gib=0.05)
    with pytest.raises(TierPlanningError, match=r"raise kv_cache_space_gib to at least 0\.18"):
        derive_engine_limits(tier)


def test_cpu_tier_without_a_kv_pool_is_refused() -> None:
    with pytest.raises(TierPlanningError, match="kv_cache_space_gib"):
        derive_engine_limits(_tier(context=2048, architecture="smollm2-135m", accelerator="cpu"))


def test_admission_capacity_is_per_replica_capacity_times_replicas() -> None:
    tier = _tier(architecture="llama-3.1-8b", replicas_min=2, replicas_max=4)
    per_replica = derive_engine_limits(tier).kv_tokens_capacity
    assert kv_tokens_capacity(tier) == 2 * per_replica
    assert kv_tokens_capacity(tier, replicas=4) == 4 * per_replica
    external = load_profile("local-cpu", apply_env=False).tiers[1]
    assert kv_tokens_capacity(external) is None


def test_tier_gpus_that_disagree_with_the_engine_tp_are_refused() -> None:
    tier = _tier(architecture="llama-3.3-70b").model_copy(update={"gpus": 2})
    with pytest.raises(TierPlanningError, match="gpus=2 but the engine runs on TP=4"):
        derive_engine_limits(tier)
