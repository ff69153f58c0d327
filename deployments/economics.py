"""What a tier is expected to cost and how fast it is expected to answer, from the capacity planner.

The gateway's SLO estimator starts from these priors and corrects them online; its cost headers
and metrics use these prices. Sources, in order:

1. the tier's explicit `price_per_million_*_tokens_usd` (prices; always wins for money);
2. the tier's `latency_plan` ("MODEL@GPU" or "MODEL@GPUxN", planner catalogue keys, e.g.
   `llama-3.1-8b@l4`, `llama-3.3-70b@h100-80gbx4`): for tiers served elsewhere or imitated;
3. the tier's `serving` section on a GPU (architecture, accelerator, TP);
4. otherwise no plan: a generic prior (below) that observations correct, and a price of zero.

A tier's `calibration_file` (from `tiergate plan --calibrate`) replaces the planner's default
efficiencies and reserve terms in sources 2 and 3, so the estimator starts from the fleet's own
measured speeds.

Prices from the planner: output tokens at the engine's full-batch decode throughput (GPU-hours
per token produced); prompt tokens at prefill throughput (one prompt saturates the GPU's compute,
so GPU-seconds per prompt token = time to first token / prompt length).
"""

from __future__ import annotations

from dataclasses import dataclass

from deployments.planning import TYPICAL_SEQUENCE_TOKENS, tier_calibration
from deployments.profile import TierSpec
from router.capacity.architectures import catalogue_architecture
from router.capacity.calibration import Calibration
from router.capacity.hardware import gpu as gpu_spec
from router.capacity.memory import VLLM_DEFAULT_MAX_NUM_SEQS
from router.capacity.plan import PlanInputs, decode_ms_per_token, plan
from router.errors import ConfigError
from router.runtime.slo import LatencyPrior

# A tier with no plan: a small model on a modest accelerator. Only a starting point; the
# estimator's observed/predicted correction replaces it within a few requests.
GENERIC_PRIOR = LatencyPrior(
    ttft_fixed_ms=50.0,
    prefill_ms_per_token=0.05,
    decode_ms_per_token=20.0,
    decode_ms_per_token_full_batch=30.0,
    max_batch=8,
)
# Prompt length the per-token prefill slope is measured over.
_PREFILL_PROBE_TOKENS = 1024


@dataclass(frozen=True, slots=True)
class TierEconomics:
    """A tier's latency prior and token prices (USD per million tokens)."""

    prior: LatencyPrior
    prompt_usd_per_million: float
    output_usd_per_million: float
    source: str  # "latency_plan", "serving", "profile-prices" or "generic"
    calibration: str | None = None  # the name of the calibration the prior was planned with

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_usd_per_million + completion_tokens * self.output_usd_per_million) / 1e6


def parse_latency_plan(value: str) -> tuple[str, str, int | None]:
    """'llama-3.1-8b@l4' -> ('llama-3.1-8b', 'l4', None); '...@h100-80gbx4' -> (..., 'h100-80gb', 4)."""
    model, sep, hw = value.partition("@")
    if not sep or not model or not hw:
        raise ConfigError(f"latency_plan {value!r} must read MODEL@GPU or MODEL@GPUxN, e.g. llama-3.1-8b@l4")
    gpus: int | None = None
    head, x, tail = hw.rpartition("x")
    if x and head and tail.isdigit():
        hw, gpus = head, int(tail)
    return model, hw, gpus


def planned(
    model: str,
    gpu: str,
    gpus: int | None = None,
    *,
    max_num_seqs: int | None = None,
    context_tokens: int = 4096,
    price_per_gpu_hour_usd: float | None = None,
    calibration: Calibration | None = None,
) -> tuple[LatencyPrior, float, float]:
    """(prior, prompt USD/M, output USD/M) for `model` on `gpus` x `gpu`, from the planner.

    `calibration` (from `tiergate plan --calibrate`; a tier's `calibration_file`) replaces the
    planner's default efficiencies and reserve terms.
    """

    def inputs(q: PlanInputs) -> PlanInputs:
        return q if calibration is None else calibration.apply(q)

    arch = catalogue_architecture(model)
    hardware = gpu_spec(gpu)
    # Priced and timed at a typical sequence, not the tier's longest: a tier whose full context
    # holds few sequences still serves mostly short ones (its admission bounds the rest).
    context = min(context_tokens, arch.max_context_tokens, TYPICAL_SEQUENCE_TOKENS)
    probe = min(_PREFILL_PROBE_TOKENS, context)
    seqs = max_num_seqs or VLLM_DEFAULT_MAX_NUM_SEQS
    one = plan(
        arch,
        hardware,
        inputs(PlanInputs(gpus=gpus, context_tokens=context, prompt_tokens=1, max_num_seqs=seqs, batch=1)),
    )
    full = plan(
        arch,
        hardware,
        inputs(
            PlanInputs(
                gpus=gpus,
                context_tokens=context,
                prompt_tokens=probe,
                max_num_seqs=seqs,
                price_per_gpu_hour_usd=price_per_gpu_hour_usd,
                batch=1,  # time to first token alone; the estimator adds load
            )
        ),
    )
    # Decode reads each sequence's KV at its current length; a typical request is far shorter
    # than the context limit, so the batch-1 step is taken at the probe length.
    typical = inputs(PlanInputs(gpus=gpus, context_tokens=probe, prompt_tokens=probe, max_num_seqs=seqs))
    itl_one = decode_ms_per_token(arch, hardware, typical, 1)
    if full.fit_problem is not None:
        raise ConfigError(f"{model} does not fit on {full.gpus} x {gpu}: {full.fit_problem}")
    slope = max(full.ttft_ms_estimate - one.ttft_ms_estimate, 0.0) / max(probe - 1, 1)
    # The planner's batch is what memory holds; the engine decodes no more than max_num_seqs at once.
    batch = max(min(full.max_batch, seqs), 1)
    itl_full = decode_ms_per_token(arch, hardware, typical, batch)
    prior = LatencyPrior(
        ttft_fixed_ms=one.ttft_ms_estimate,  # the planner's server and step overheads included
        prefill_ms_per_token=slope,
        decode_ms_per_token=itl_one,
        decode_ms_per_token_full_batch=itl_full,
        max_batch=batch,
    )
    gpu_usd_per_s = full.price_per_gpu_hour_usd * full.gpus / 3600.0
    tokens_per_s = batch * 1e3 / itl_full if itl_full > 0 else 0.0
    output = gpu_usd_per_s / tokens_per_s * 1e6 if tokens_per_s > 0 else 0.0
    prompt = gpu_usd_per_s * (slope / 1e3) * 1e6
    return prior, prompt, output


def tier_economics(tier: TierSpec) -> TierEconomics:
    """The tier's prior and prices, from the first source that applies (see the module doc)."""
    prior, prompt, output, source = GENERIC_PRIOR, 0.0, 0.0, "generic"
    serving = tier.serving
    # The profile's GPU price, when given, replaces the planner catalogue's list price.
    price = tier.price_per_gpu_hour_usd or None
    calibration = tier_calibration(tier)
    if tier.latency_plan is not None:
        model, hw, gpus = parse_latency_plan(tier.latency_plan)
        prior, prompt, output = planned(
            model,
            hw,
            gpus,
            max_num_seqs=tier.engine_max_num_seqs,
            context_tokens=tier.context_length_tokens,
            price_per_gpu_hour_usd=price,
            calibration=calibration,
        )
        source = "latency_plan"
    elif serving is not None and serving.accelerator != "cpu" and serving.architecture:
        prior, prompt, output = planned(
            serving.architecture,
            serving.accelerator,
            serving.tensor_parallel_size,
            max_num_seqs=serving.max_num_seqs,
            context_tokens=serving.max_model_len_tokens or tier.context_length_tokens,
            price_per_gpu_hour_usd=price,
            calibration=calibration,
        )
        source = "serving"
    if tier.price_per_million_prompt_tokens_usd is not None:
        prompt, source = tier.price_per_million_prompt_tokens_usd, "profile-prices"
    if tier.price_per_million_output_tokens_usd is not None:
        output, source = tier.price_per_million_output_tokens_usd, "profile-prices"
    return TierEconomics(prior, prompt, output, source, None if calibration is None else calibration.name)
