"""One tier of the profile (its engine and, when deployments/ serves it, its serving section) and the
rule that tiers naming one engine describe one engine.

Split from deployments/profile.py (the whole profile) by job; `deployments.profile` re-exports the
names other modules read.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from deployments.spec import StrictSpec

TierName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class ServingSpec(StrictSpec):
    """How deployments/ serves a tier with Ray Serve + vLLM (ignored for external endpoints)."""

    model_source: str = Field(
        description="Hugging Face folder or model id; 'stand-in' means the packaged SmolLM2 model."
    )
    architecture: str | None = Field(
        default=None,
        description="Planner catalogue key or config.json path used for capacity planning.",
    )
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "auto"
    quantization: str | None = None
    accelerator: str = Field(default="cpu", description="'cpu' or a GPU catalogue key, e.g. 'h100-80gb'.")
    tensor_parallel_size: int | None = Field(
        default=None, ge=1, description="TP degree; left out, the capacity planner derives it."
    )
    replicas_min: int = Field(default=1, ge=0)
    replicas_max: int = Field(default=1, ge=1)
    max_num_seqs: int | None = Field(default=None, ge=1)
    max_model_len_tokens: int | None = Field(default=None, ge=16)
    gpu_memory_utilization: float | None = Field(default=None, gt=0.0, le=1.0)
    kv_cache_space_gib: float | None = Field(
        default=None, gt=0.0, description="vLLM-CPU KV pool (VLLM_CPU_KVCACHE_SPACE)."
    )
    enforce_eager: bool = False
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vLLM engine arguments, passed unchanged."
    )

    @model_validator(mode="after")
    def _replicas_ordered(self) -> ServingSpec:
        if self.replicas_min > self.replicas_max:
            raise ValueError("replicas_min must not exceed replicas_max")
        return self


class TierSpec(StrictSpec):
    """One rung of the ladder. Tiers are listed cheapest first."""

    name: TierName = Field(description="Name callers pin with model=<name>.")
    engine: TierName = Field(
        default="",
        description=(
            "The serving engine behind this tier: one KV cache, one admission budget, one Ray Serve"
            " deployment. Tiers served by one engine name the same engine (and then share its endpoint"
            " and upstream_model; one of them carries its serving section). Left out: the tier's name,"
            " an engine of its own."
        ),
    )
    endpoint: str = Field(description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8100/v1.")
    upstream_model: str = Field(description="Model name the endpoint expects in 'model'.")
    params_billions: float | None = Field(
        default=None,
        gt=0.0,
        description="Model size in billions, shown in /v1/models; the planner sizes serving.architecture instead.",
    )
    price_per_gpu_hour_usd: float = Field(
        default=0.0,
        ge=0.0,
        description=(
            "USD per GPU-hour of this tier; replaces the planner catalogue's price when pricing tokens"
            " (deployments.economics). 0: the catalogue's price."
        ),
    )
    gpus: int = Field(default=0, ge=0, description="GPUs one replica holds (0 on CPU).")
    context_length_tokens: int = Field(
        default=4096,
        ge=16,
        description=(
            "Tokens of prompt plus answer the tier accepts (with a serving section, serving.max_model_len_tokens"
            " lowers it). A longer prompt goes to a tier that fits, else a 400; max_tokens is capped to what is left."
        ),
    )
    tokenizer: str | None = Field(
        default=None,
        description=(
            "A tokenizer.json file, or a folder holding one, to count this tier's prompt tokens; 'stand-in': the"
            " packaged model's (after `tiergate model prepare`). Left out: the serving model's local folder when it"
            " has one (tiers sharing an engine share it), else the bytes/4 estimate."
        ),
    )
    default_max_tokens: int = Field(default=512, ge=1, description="Cap applied when a request gives none.")
    kv_capacity_tokens: int | None = Field(
        default=None,
        ge=1,
        description=(
            "KV-cache tokens the tier holds across its replicas, for admission control. Left out, the"
            " capacity planner derives it from the serving spec; with neither, only the queue is bounded."
        ),
    )
    router_rung: str | None = Field(
        default=None,
        description=(
            "Rung of the learned router's ladder this tier stands for: small, mid or large (the first"
            " artifact's model keys are still read as those rungs)."
        ),
    )
    latency_plan: str | None = Field(
        default=None,
        description=(
            "MODEL@GPU or MODEL@GPUxN (planner catalogue keys, e.g. llama-3.1-8b@l4): the planner's latency"
            " prior and token prices for a tier served outside this profile or imitated by a fake."
        ),
    )
    engine_max_num_seqs: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Sequences the engine decodes at once (vLLM's max_num_seqs) for a tier not served from this profile;"
            " with latency_plan it sizes the estimator's batch and queue. Served tiers use serving.max_num_seqs."
        ),
    )
    calibration_file: str | None = Field(
        default=None,
        description=(
            "A planner calibration (`tiergate plan --calibrate ... --calibration-out FILE`), relative to the profile"
            " file or absolute: its efficiencies and reserve terms replace the planner's defaults for this tier's"
            " latency prior and token prices (latency_plan or a GPU serving section) and its engine's limits."
        ),
    )
    price_per_million_prompt_tokens_usd: float | None = Field(
        default=None, ge=0.0, description="Overrides the planner's prompt-token price (cost headers and metrics)."
    )
    price_per_million_output_tokens_usd: float | None = Field(
        default=None, ge=0.0, description="Overrides the planner's output-token price (cost headers and metrics)."
    )
    metrics_url: str | None = Field(
        default=None,
        description=(
            "The engine's Prometheus endpoint (vLLM's /metrics); its running/waiting counts feed the latency"
            " estimate. Left out, the gateway's own in-flight count is used (right only with one gateway process)."
        ),
    )
    serving: ServingSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _engine_defaults_to_name(cls, data: Any) -> Any:
        # Filled before validation so that `engine` is always a plain name, never None.
        if isinstance(data, dict) and not data.get("engine") and "name" in data:
            return {**data, "engine": data["name"]}
        return data

    @model_validator(mode="after")
    def _calibration_has_a_plan(self) -> TierSpec:
        # The planner times neither an external tier without latency_plan nor a CPU engine (its KV
        # pool is given): a calibration there would change nothing, which would mislead.
        planned = self.latency_plan is not None or (self.serving is not None and self.serving.accelerator != "cpu")
        if self.calibration_file is not None and not planned:
            raise ValueError("calibration_file needs latency_plan or a GPU serving section: nothing else is planned")
        return self


def check_engines(tiers: list[TierSpec]) -> None:
    """Tiers naming one engine describe one engine, and no tier reaches a served engine under another name.

    The gateway keeps one admission budget per engine and deployments/ builds one Ray Serve
    deployment per engine, so a disagreement here would split one KV cache into two budgets.
    """
    owners: dict[str, TierSpec] = {}  # engine -> the tier describing it (the one with serving, if any)
    for tier in tiers:
        known = owners.setdefault(tier.engine, tier)
        if known is tier:
            continue
        for field, theirs, mine in (
            ("upstream_model", known.upstream_model, tier.upstream_model),
            ("endpoint", _endpoint(known), _endpoint(tier)),
        ):
            if mine != theirs:
                raise ValueError(
                    f"tiers {known.name!r} and {tier.name!r} name engine {tier.engine!r} but differ in"
                    f" {field} ({theirs!r} vs {mine!r}); tiers sharing an engine reach it at one endpoint"
                    " by one upstream_model"
                )
        if tier.serving is not None:
            if known.serving is not None and known.serving != tier.serving:
                raise ValueError(
                    f"tiers {known.name!r} and {tier.name!r} name engine {tier.engine!r} with different"
                    " serving sections; give the serving section on one of them only"
                )
            owners[tier.engine] = tier
    served = {(_endpoint(t), t.upstream_model): t for t in owners.values() if t.serving is not None}
    for tier in tiers:
        owner = served.get((_endpoint(tier), tier.upstream_model))
        if tier.serving is None and owner is not None and owner.engine != tier.engine:
            # Before engines were named such a tier shared the engine implicitly; say how to keep that.
            raise ValueError(
                f"tier {tier.name!r} reaches upstream_model {tier.upstream_model!r} at {tier.endpoint}, which"
                f" engine {owner.engine!r} (tier {owner.name!r}) serves; set engine: {owner.engine} on it"
            )


def _endpoint(tier: TierSpec) -> str:
    # A trailing slash does not make another endpoint.
    return tier.endpoint.rstrip("/")
