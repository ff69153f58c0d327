"""Build the Ray Serve application (ray.serve.llm over vLLM) from a profile.

One LLMConfig per engine the profile serves: tiers name their engine (`engine`, by default the
tier's own name), and the tier of an engine that carries a `serving` section describes it; the
others share it (the local profile backs all three tiers with one stand-in engine). The model id
Ray Serve exposes is the engine's `upstream_model`, which is what the gateway sends as `model`.

Everything up to `build_llm_configs` is pure (plain dicts, no Ray running), so the configs a GPU
fleet would get are unit-tested on a laptop. KubeRay imports `deployments.app:build_app` with the
profile as its argument, e.g. `args: {profile: gpu-h100}`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployments.model import STAND_IN_SOURCE, prepared_stand_in_dir
from deployments.planning import TierPlanningError, derive_engine_limits
from deployments.profile import Profile, ServingSpec, TierSpec, load_profile
from router.errors import ConfigError

if TYPE_CHECKING:
    from ray.serve.deployment import Application
    from ray.serve.llm import LLMConfig

# Ray's accelerator_type names for the profile's GPU catalogue keys: a replica then only lands on
# nodes of that GPU shape (Ray detects the type on each node, KubeRay worker groups carry it).
RAY_ACCELERATOR_TYPES: dict[str, str] = {
    "a100-80gb": "A100-80G",
    "a100-40gb": "A100-40G",
    "h100-80gb": "H100",
    "h200-141gb": "H200",
    "l4-24gb": "L4",
    "a10g-24gb": "A10G",
}

# Engine arguments the profile types itself; `serving.engine_kwargs` must not repeat them, or one
# of the two values would silently lose.
_TYPED_ENGINE_KEYS = frozenset(
    {
        "tensor_parallel_size",
        "max_num_seqs",
        "max_model_len",
        "gpu_memory_utilization",
        "dtype",
        "quantization",
        "enforce_eager",
    }
)

PLACEMENT_STRATEGY = "STRICT_PACK"
"""All shards of one TP engine on one node (NVLink); Ray's default changed across versions."""


class ServeBuildError(ConfigError):
    """The profile cannot be turned into a Ray Serve application; the message names the tier."""


@dataclass(frozen=True)
class ServedModel:
    """One engine deployment and the tiers it backs (cheapest first)."""

    engine: str
    model_id: str
    tiers: tuple[str, ...]
    serving: ServingSpec


def is_gpu(spec: ServingSpec) -> bool:
    return spec.accelerator.lower() != "cpu"


def served_models(profile: Profile) -> list[ServedModel]:
    """Group the tiers by the engine they name; engines without a serving section are external.

    The profile has already checked that tiers naming one engine agree on its endpoint, upstream
    model and serving section. Left to check here is what only Ray Serve cares about: one
    application exposes each model id once, so two engines may not deploy the same upstream model.
    """
    engines: dict[str, list[TierSpec]] = {}
    for tier in profile.tiers:
        engines.setdefault(tier.engine, []).append(tier)
    served: dict[str, ServedModel] = {}
    for engine, tiers in engines.items():
        spec = next((t.serving for t in tiers if t.serving is not None), None)
        if spec is None:
            continue
        model_id = tiers[0].upstream_model
        other = served.get(model_id)
        if other is not None:
            sections = "different serving sections" if other.serving != spec else "two serving sections"
            raise ServeBuildError(
                f"tiers {other.tiers[0]!r} and {tiers[0].name!r} deploy upstream model {model_id!r} as two"
                f" engines ({other.engine!r}, {engine!r}) with {sections}; Ray Serve exposes one engine per"
                f" model id: name one engine for both (engine: {other.engine}) with one serving section,"
                " or give them different upstream_model values"
            )
        served[model_id] = ServedModel(engine, model_id, tuple(t.name for t in tiers), spec)
    return list(served.values())


def plan_serving(spec: ServingSpec, tiers: list[TierSpec]) -> ServingSpec:
    """Fill in and check the engine limits of one engine with the capacity planner.

    With `serving.architecture` set, deployments.planning derives tensor_parallel_size,
    max_num_seqs, max_model_len and gpu_memory_utilization where the profile leaves them out and
    checks them where it gives them (a tier that cannot fit is refused with the numbers). Without
    an architecture the profile's values are used as given: TP 1 on CPU, and a GPU engine must
    then state its TP degree.
    """
    owner = next(t for t in tiers if t.serving is not None)
    if spec.architecture is not None:
        try:
            limits = derive_engine_limits(owner)
        except TierPlanningError as err:
            raise ServeBuildError(str(err)) from None
        update: dict[str, Any] = {
            "tensor_parallel_size": limits.tensor_parallel_size,
            "max_num_seqs": limits.max_num_seqs,
            "max_model_len_tokens": limits.max_model_len,
        }
        if is_gpu(spec):
            update["gpu_memory_utilization"] = limits.gpu_memory_utilization
        return spec.model_copy(update=update)
    if spec.tensor_parallel_size is None:
        if is_gpu(spec):
            raise ServeBuildError(
                f"tier {owner.name!r}: set serving.tensor_parallel_size, or serving.architecture so that"
                " the capacity planner can derive it"
            )
        return spec.model_copy(update={"tensor_parallel_size": 1})
    return spec


def engine_kwargs(spec: ServingSpec) -> dict[str, Any]:
    """vLLM engine arguments for one engine (after `plan_serving`)."""
    clash = sorted(_TYPED_ENGINE_KEYS & spec.engine_kwargs.keys())
    if clash:
        raise ServeBuildError(f"serving.engine_kwargs repeats typed fields {clash}; set them in serving itself")
    kwargs: dict[str, Any] = {
        "tensor_parallel_size": spec.tensor_parallel_size or 1,
        "dtype": spec.dtype,
        "enforce_eager": spec.enforce_eager,
    }
    if spec.max_num_seqs is not None:
        kwargs["max_num_seqs"] = spec.max_num_seqs
    if spec.max_model_len_tokens is not None:
        kwargs["max_model_len"] = spec.max_model_len_tokens
    if spec.quantization is not None:
        kwargs["quantization"] = spec.quantization
    if is_gpu(spec) and spec.gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = spec.gpu_memory_utilization
    kwargs.update(spec.engine_kwargs)
    return kwargs


def placement_group_config(spec: ServingSpec) -> dict[str, Any] | None:
    """One {"GPU": 1, "CPU": 1} bundle per TP shard, STRICT_PACK; None on CPU (Ray's default fits).

    Ray Serve adds the replica actor's own CPU to the first bundle.
    """
    if not is_gpu(spec):
        return None
    shards = spec.tensor_parallel_size or 1
    return {"bundles": [{"GPU": 1, "CPU": 1} for _ in range(shards)], "strategy": PLACEMENT_STRATEGY}


def deployment_config(spec: ServingSpec) -> dict[str, Any]:
    """Ray Serve deployment options: replica autoscaling between the profile's bounds."""
    return {
        "autoscaling_config": {
            "min_replicas": spec.replicas_min,
            "max_replicas": spec.replicas_max,
            "initial_replicas": max(spec.replicas_min, 1),
        }
    }


def runtime_env(spec: ServingSpec) -> dict[str, Any]:
    env_vars = {"HF_HUB_OFFLINE": "1"} if spec.model_source == STAND_IN_SOURCE else {}
    if not is_gpu(spec) and spec.kv_cache_space_gib is not None:
        # vLLM-CPU reads its KV pool as whole GiB; rounding would make the planner's KV capacity
        # (and the gateway's admission budget) disagree with the engine, so refuse a fraction.
        if not float(spec.kv_cache_space_gib).is_integer():
            raise ServeBuildError(
                f"serving.kv_cache_space_gib must be a whole number of GiB on CPU, got {spec.kv_cache_space_gib}"
            )
        env_vars["VLLM_CPU_KVCACHE_SPACE"] = str(int(spec.kv_cache_space_gib))
    return {"env_vars": env_vars} if env_vars else {}


def llm_config_dict(served: ServedModel, stand_in_path: Path | None) -> dict[str, Any]:
    """The LLMConfig fields for one engine, as plain data (validated by `build_llm_configs`)."""
    spec = served.serving
    if spec.model_source == STAND_IN_SOURCE:
        if stand_in_path is None:
            raise ServeBuildError(f"model {served.model_id!r} uses the stand-in model but none is prepared")
        source = str(stand_in_path)
    else:
        source = spec.model_source
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": served.model_id, "model_source": source},
        "engine_kwargs": engine_kwargs(spec),
        "deployment_config": deployment_config(spec),
    }
    if is_gpu(spec):
        config["accelerator_config"] = {"kind": "gpu"}
        ray_type = RAY_ACCELERATOR_TYPES.get(spec.accelerator.lower())
        if ray_type is not None:
            config["accelerator_type"] = ray_type
        config["placement_group_config"] = placement_group_config(spec)
    else:
        config["accelerator_config"] = {"kind": "cpu"}
    env = runtime_env(spec)
    if env:
        config["runtime_env"] = env
    return config


def llm_config_dicts(profile: Profile, stand_in_path: Path | None = None) -> list[dict[str, Any]]:
    """Every engine of the profile, planned, as plain LLMConfig data."""
    out = []
    for served in served_models(profile):
        tiers = [t for t in profile.tiers if t.name in served.tiers]
        planned = replace(served, serving=plan_serving(served.serving, tiers))
        out.append(llm_config_dict(planned, stand_in_path))
    if not out:
        raise ServeBuildError(f"profile {profile.name!r} has no tier with a serving section")
    return out


def uses_stand_in(profile: Profile) -> bool:
    return any(t.serving is not None and t.serving.model_source == STAND_IN_SOURCE for t in profile.tiers)


def build_llm_configs(profile: Profile, stand_in_path: Path | None = None) -> list[LLMConfig]:
    """Validate each engine's config through Ray Serve LLM's own model (needs ray, not a cluster)."""
    from ray.serve.llm import LLMConfig

    if stand_in_path is None and uses_stand_in(profile):
        stand_in_path = prepared_stand_in_dir()
    return [LLMConfig(**data) for data in llm_config_dicts(profile, stand_in_path)]


def build_app(args: dict[str, Any]) -> Application:
    """Ray Serve application builder: `deployments.app:build_app` with args {"profile": NAME_OR_PATH}.

    The OpenAI-compatible API (/v1/chat/completions, /v1/models) serves every engine by its
    upstream model name.
    """
    from ray.serve.llm import build_openai_app

    profile = load_profile(str(args.get("profile", "local-cpu")), apply_env=False)
    return build_openai_app({"llm_configs": build_llm_configs(profile)})
