"""The Ray Serve configs a profile produces, checked without a Ray cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deployments.app import (
    PLACEMENT_STRATEGY,
    ServeBuildError,
    llm_config_dicts,
    served_models,
)
from deployments.planning import derive_engine_limits
from deployments.profile import load_profile, parse_profile

STAND_IN = Path("/models/stand-in")


def _by_model(profile_name: str) -> dict[str, dict[str, Any]]:
    configs = llm_config_dicts(load_profile(profile_name, apply_env=False), STAND_IN)
    return {c["model_loading_config"]["model_id"]: c for c in configs}


GPU_PROFILES = ["gpu-a100", "gpu-h100"]


@pytest.mark.parametrize("profile_name", GPU_PROFILES)
def test_gpu_profiles_give_each_tp_shard_one_gpu_bundle_strictly_packed(profile_name: str) -> None:
    profile = load_profile(profile_name, apply_env=False)
    configs = _by_model(profile_name)
    assert set(configs) == {t.upstream_model for t in profile.tiers}
    for tier in profile.tiers:
        config = configs[tier.upstream_model]
        tp = config["engine_kwargs"]["tensor_parallel_size"]
        pg = config["placement_group_config"]
        assert pg["strategy"] == PLACEMENT_STRATEGY == "STRICT_PACK"
        assert len(pg["bundles"]) == tp == tier.gpus
        assert all(bundle["GPU"] == 1 and bundle["CPU"] >= 1 for bundle in pg["bundles"])
        assert config["accelerator_config"] == {"kind": "gpu"}
        assert config["engine_kwargs"]["dtype"] == "bfloat16"


@pytest.mark.parametrize("profile_name", GPU_PROFILES)
def test_llama_70b_runs_at_tp4_and_the_small_models_on_one_gpu(profile_name: str) -> None:
    profile = load_profile(profile_name, apply_env=False)
    configs = _by_model(profile_name)
    tp = {
        t.serving.model_source: configs[t.upstream_model]["engine_kwargs"]["tensor_parallel_size"]
        for t in profile.tiers
        if t.serving is not None
    }
    assert tp == {
        "meta-llama/Llama-3.2-1B-Instruct": 1,
        "meta-llama/Llama-3.1-8B-Instruct": 1,
        "meta-llama/Llama-3.3-70B-Instruct": 4,
    }


@pytest.mark.parametrize(("profile_name", "ray_type"), [("gpu-a100", "A100-80G"), ("gpu-h100", "H100")])
def test_gpu_profiles_pin_replicas_to_their_gpu_shape(profile_name: str, ray_type: str) -> None:
    assert {c["accelerator_type"] for c in _by_model(profile_name).values()} == {ray_type}


@pytest.mark.parametrize("profile_name", GPU_PROFILES)
def test_engine_args_are_the_planners_limits(profile_name: str) -> None:
    """Given values (gpu-a100) pass the planner unchanged; left-out ones (gpu-h100) are derived."""
    configs = _by_model(profile_name)
    for tier in load_profile(profile_name, apply_env=False).tiers:
        limits = derive_engine_limits(tier)
        kwargs = configs[tier.upstream_model]["engine_kwargs"]
        assert kwargs["tensor_parallel_size"] == limits.tensor_parallel_size
        assert kwargs["max_num_seqs"] == limits.max_num_seqs
        assert kwargs["max_model_len"] == limits.max_model_len
        assert kwargs["gpu_memory_utilization"] == limits.gpu_memory_utilization


def test_explicit_engine_limits_are_kept() -> None:
    profile = load_profile("gpu-a100", apply_env=False)
    large = profile.tier("large")
    assert large is not None
    assert large.serving is not None
    kwargs = _by_model("gpu-a100")[large.upstream_model]["engine_kwargs"]
    assert kwargs["max_num_seqs"] == large.serving.max_num_seqs == 64
    assert kwargs["max_model_len"] == large.serving.max_model_len_tokens == 16384
    assert kwargs["gpu_memory_utilization"] == large.serving.gpu_memory_utilization


def test_a_tier_that_cannot_fit_is_refused_before_any_engine_starts() -> None:
    serving = {
        "model_source": "meta-llama/Llama-3.3-70B-Instruct",
        "architecture": "llama-3.3-70b",
        "accelerator": "h100-80gb",
        "dtype": "bfloat16",
        "tensor_parallel_size": 1,
    }
    with pytest.raises(ServeBuildError, match="does not fit"):
        llm_config_dicts(_profile([_tier("big", "big", serving)]))


def test_local_profile_backs_every_tier_with_one_float32_stand_in_engine() -> None:
    profile = load_profile("local-cpu", apply_env=False)
    [served] = served_models(profile)
    assert served.tiers == ("small", "medium", "large")
    [config] = llm_config_dicts(profile, STAND_IN)
    assert config["model_loading_config"] == {"model_id": served.model_id, "model_source": str(STAND_IN)}
    assert config["engine_kwargs"]["dtype"] == "float32"
    assert config["engine_kwargs"]["enforce_eager"] is True
    assert "gpu_memory_utilization" not in config["engine_kwargs"]
    assert config["accelerator_config"] == {"kind": "cpu"}
    assert "placement_group_config" not in config
    assert config["runtime_env"]["env_vars"]["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_replica_bounds_become_autoscaling_bounds() -> None:
    small = _by_model("gpu-a100")["small"]
    assert small["deployment_config"]["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "initial_replicas": 1,
    }


def _profile(tiers: list[dict[str, Any]]) -> Any:
    return parse_profile({"name": "t", "tiers": tiers})


def _tier(name: str, upstream: str, serving: dict[str, Any] | None) -> dict[str, Any]:
    tier: dict[str, Any] = {"name": name, "endpoint": "http://127.0.0.1:8100/v1", "upstream_model": upstream}
    if serving is not None:
        tier["serving"] = serving
    return tier


def test_two_tiers_naming_one_model_with_different_serving_are_refused() -> None:
    profile = _profile(
        [
            _tier("a", "m", {"model_source": "x", "max_num_seqs": 4}),
            _tier("b", "m", {"model_source": "x", "max_num_seqs": 8}),
        ]
    )
    with pytest.raises(ServeBuildError, match="different serving"):
        served_models(profile)


def test_gpu_engine_without_tp_or_architecture_is_refused() -> None:
    profile = _profile([_tier("a", "m", {"model_source": "x", "accelerator": "h100-80gb"})])
    with pytest.raises(ServeBuildError, match="tensor_parallel_size"):
        llm_config_dicts(profile)


def test_extra_engine_kwargs_may_not_shadow_typed_fields() -> None:
    profile = _profile([_tier("a", "m", {"model_source": "x", "engine_kwargs": {"max_num_seqs": 3}})])
    with pytest.raises(ServeBuildError, match="max_num_seqs"):
        llm_config_dicts(profile)


def test_extra_engine_kwargs_pass_through_unchanged() -> None:
    profile = _profile([_tier("a", "m", {"model_source": "x", "engine_kwargs": {"seed": 7}})])
    [config] = llm_config_dicts(profile)
    assert config["engine_kwargs"]["seed"] == 7


def test_tiers_without_serving_are_not_deployed() -> None:
    profile = _profile([_tier("a", "m", {"model_source": "x"}), _tier("ext", "gpt", None)])
    assert [s.model_id for s in served_models(profile)] == ["m"]


def test_stand_in_without_a_prepared_folder_is_refused() -> None:
    profile = _profile([_tier("a", "m", {"model_source": "stand-in"})])
    with pytest.raises(ServeBuildError, match="stand-in"):
        llm_config_dicts(profile, None)


def test_ray_serve_llm_accepts_every_shipped_profile() -> None:
    pytest.importorskip("ray.serve.llm")
    from deployments.app import build_llm_configs

    for name in ("local-cpu", "gpu-a100", "gpu-h100"):
        for config in build_llm_configs(load_profile(name, apply_env=False), STAND_IN):
            engine = config.get_engine_config()
            assert engine is not None
            assert len(engine.placement_bundles) == engine.num_devices
            if name != "local-cpu":
                assert engine.placement_strategy == "STRICT_PACK"


def test_a_fractional_cpu_kv_pool_is_refused_not_rounded() -> None:
    serving = {"model_source": "x", "kv_cache_space_gib": 1.5}
    with pytest.raises(ServeBuildError, match="whole number"):
        llm_config_dicts(_profile([_tier("a", "m", serving)]))
