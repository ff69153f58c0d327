"""Calibration on the operator's own traffic: the cascade's operating point, or the pre-router's thresholds.

`calibrate_point` re-places the whole operating point (start rule and verifier thresholds) on a
labelled sample, falling back to a fixed mix of tiers where the router does not beat one; the
threshold functions below place the pre-router alone in a profile.

The pre-router sends a request to the first tier whose score is under that tier's threshold. One
shared threshold t for every tier keeps the list ascending (the profile requires it) and leaves a
single number to search: a request reaches the top tier only when every cheaper tier scores >= t.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from router.offline.cascade import (
    NEVER,
    CascadeInputs,
    CascadeResult,
    best_mix_cost_ratio,
    cheapest_fixed_mix,
    choose_operating_point,
    simulate,
)
from router.offline.fit import FeatureCache, cascade_rows
from router.offline.outcomes import OutcomeRow
from router.offline.refit import refit_verifiers
from router.offline.report import router_inputs, sub_ladder_parts
from router.offline.train import rung_rows
from router.runtime.model import RouterModel
from router.runtime.operating_point import OperatingPoint, cumulative_shares

FloatArray = NDArray[np.float64]


def routed_tier(scores: FloatArray, threshold: float) -> NDArray[np.int64]:
    """Tier index per request for a shared threshold (scores: (n, tiers-1))."""
    n, k_minus_1 = scores.shape
    tier = np.full(n, k_minus_1, dtype=np.int64)
    for k in range(k_minus_1 - 1, -1, -1):
        tier = np.where(scores[:, k] < threshold, k, tier)
    return tier


def _candidates(scores: FloatArray) -> list[float]:
    values = np.unique(np.round(scores.ravel(), 6))
    return [0.0, *[float(v) for v in values], 1.0 + 1e-9]


def threshold_for_large_share(scores: FloatArray, target_share: float) -> float:
    """The threshold whose share of requests routed to the top tier is closest to `target_share`."""
    if not 0.0 <= target_share <= 1.0:
        raise ValueError("target large share must lie in [0, 1]")
    if scores.shape[0] == 0:
        raise ValueError("calibration needs at least one request")
    top = scores.shape[1]
    best, best_gap = 1.0, float("inf")
    for t in _candidates(scores):
        share = float((routed_tier(scores, t) == top).mean())
        if abs(share - target_share) < best_gap - 1e-12:
            best, best_gap = t, abs(share - target_share)
    return min(max(best, 0.0), 1.0)


def threshold_for_quality(scores: FloatArray, quality: FloatArray, target_ratio: float) -> float:
    """The cheapest threshold (fewest top-tier requests) whose quality / always-top >= target.

    quality: (n, tiers), each tier's score per request. Falls back to 0.0 (always top) when no
    threshold reaches the target.
    """
    if scores.shape[0] == 0:
        raise ValueError("calibration needs at least one request")
    top_quality = float(quality[:, -1].mean())
    rows = np.arange(scores.shape[0])
    best_t, best_top_share = 0.0, float("inf")
    for t in _candidates(scores):
        tier = routed_tier(scores, t)
        ratio = float(quality[rows, tier].mean()) / top_quality if top_quality > 0 else 1.0
        top_share = float((tier == scores.shape[1]).mean())
        if ratio >= target_ratio and top_share < best_top_share - 1e-12:
            best_t, best_top_share = t, top_share
    return min(max(best_t, 0.0), 1.0)


@dataclass(frozen=True)
class Calibrated:
    """A re-placed operating point and what the sample says it will do (ratios to always-top)."""

    point: OperatingPoint
    result: CascadeResult
    summary: dict[str, Any]


def _interval(values: list[float]) -> list[float] | None:
    finite = [v for v in values if np.isfinite(v)]
    if len(finite) < 5:
        return None
    lo, hi = np.quantile(finite, [0.05, 0.95])
    return [round(float(lo), 4), round(float(hi), 4)]


def _mix_ratio(inputs: CascadeInputs, result: CascadeResult) -> float:
    mix = best_mix_cost_ratio(inputs.scores, inputs.cost_usd, result.quality_ratio)
    return result.cost_ratio / mix if mix else float("nan")


def _round_or_none(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


# Resamples behind "reaches the target" (see choose_operating_point) and the share of them that must.
ROBUST_RESAMPLES = 100
ROBUST_CONFIDENCE = 0.8
# Verifier thresholds per rung tried on a sample: quantiles in steps of 10%.
CALIBRATION_STEPS = 11
# The pre-router's start thresholds are not searched on a sample: at APGR near random they only
# gave the search more ways to fit the sample's noise (leave-one-benchmark-out, docs/router.md).
PROMPT_START = False


def _choose_router(inputs: CascadeInputs, target: float, seed: int) -> tuple[OperatingPoint, CascadeResult]:
    return choose_operating_point(
        inputs,
        target,
        steps=CALIBRATION_STEPS,
        resamples=ROBUST_RESAMPLES,
        confidence=ROBUST_CONFIDENCE,
        seed=seed,
        prompt_start=PROMPT_START,
    )


def _held_out_gain(inputs: CascadeInputs, target: float, seed: int, checks: int) -> list[float]:
    """Router cost over the best mix's, on rows a choice made without them never saw (per resample)."""
    rng = np.random.default_rng(seed + 2)
    n = len(inputs.scores)
    out: list[float] = []
    for _ in range(checks):
        pick = rng.integers(0, n, n)
        left = np.setdiff1d(np.arange(n), pick)
        if len(left) < 5:
            continue
        point, _ = _choose_router(inputs.subset(pick), target, seed)
        held = inputs.subset(left)
        out.append(_mix_ratio(held, simulate(held, point)))
    return [x for x in out if np.isfinite(x)]


def calibrate_point(
    inputs: CascadeInputs,
    target_quality_ratio: float = 0.95,
    *,
    bootstrap: int = 200,
    checks: int = 20,
    seed: int = 7,
    min_gain: float = 0.1,
    progress: Callable[[str], None] | None = None,
) -> Calibrated:
    """The operating point for a labelled sample of the operator's own traffic.

    The cheapest point that reaches the target in 80% of bootstrap resamples of the sample (a
    sample of a few hundred rows; on the mean alone, the point lands under the target on new
    traffic about half the time, and a fixed mix just under the target is far cheaper). The same
    rule prices the cheapest fixed mix of tiers. The router's point is kept only when it costs at
    least `min_gain` less than that mix and, over `checks` resamples, a choice made on the resample
    beats the best mix on the rows it left out (median by half `min_gain`, three times in four at all);
    otherwise the policy is the mix (start rungs drawn by share, no escalation), so a router that
    cannot earn its keep costs nothing extra. The 90%
    intervals are those of the chosen point over `bootstrap` resamples of the sample (the noise of
    the estimate, not of the choice).
    """
    point, result = _choose_router(inputs, target_quality_ratio, seed)
    mix_point, mix_result = cheapest_fixed_mix(
        inputs, target_quality_ratio, resamples=ROBUST_RESAMPLES, confidence=ROBUST_CONFIDENCE, seed=seed
    )
    kind = "router"
    held_out = _held_out_gain(inputs, target_quality_ratio, seed, checks) if checks else []
    if progress is not None and held_out:
        progress(f"router / best mix on rows each choice left out: median {np.median(held_out):.3f}")
    if not result.cost_ratio <= (1.0 - min_gain) * mix_result.cost_ratio or (
        held_out and not (np.median(held_out) <= 1.0 - min_gain / 2 and np.quantile(held_out, 0.75) <= 1.0)
    ):
        point, result, kind = mix_point, mix_result, "fixed-mix"
    if progress is not None:
        progress(f"{kind}: quality {result.quality_ratio:.4f}, cost {result.cost_ratio:.4f} of always-top")
    rng = np.random.default_rng(seed + 1)
    n = len(inputs.scores)
    quality, cost, vs_mix = [], [], []
    for _ in range(bootstrap):
        judged_on = inputs.subset(rng.integers(0, n, n))
        judged = simulate(judged_on, point)
        quality.append(judged.quality_ratio)
        cost.append(judged.cost_ratio)
        vs_mix.append(_mix_ratio(judged_on, judged))
    summary: dict[str, Any] = {
        "rows": n,
        "policy": kind,
        "target_quality_ratio": target_quality_ratio,
        "quality_ratio": round(result.quality_ratio, 4),
        "cost_ratio": round(result.cost_ratio, 4),
        "best_mix_cost_ratio": _round_or_none(
            best_mix_cost_ratio(inputs.scores, inputs.cost_usd, result.quality_ratio)
        ),
        "cost_vs_best_mix": _round_or_none(_mix_ratio(inputs, result)),
        "fixed_mix_cost_ratio": round(mix_result.cost_ratio, 4),
        "held_out_router_vs_mix": _interval(held_out),
        "served_share": [round(x, 4) for x in result.served_share],
        "start_mix": list(point.start_mix),
        "bootstrap": {
            "resamples": len(quality),
            "quality_ratio_90": _interval(quality),
            "cost_ratio_90": _interval(cost),
            "cost_vs_best_mix_90": _interval(vs_mix),
        },
    }
    return Calibrated(point, result, summary)


def _full_ladder_point(point: OperatingPoint, ids: Sequence[int], k_model: int) -> OperatingPoint:
    """A sub-ladder's operating point on the model's whole ladder (rungs left out are never used)."""
    if len(ids) == k_model:
        return point
    verify = [NEVER] * (k_model - 1)
    for j, i in enumerate(ids[:-1]):
        verify[i] = point.verify_thresholds[j]
    if point.mixes:
        mix = [0.0] * k_model
        for j, i in enumerate(ids):
            mix[i] = point.start_mix[j]
        return OperatingPoint(cumulative_shares(tuple(mix)), tuple(verify), tuple(mix))
    start = [-1.0] * (k_model - 1)
    for j, i in enumerate(ids[:-1]):
        start[i] = point.start_thresholds[j]
    return OperatingPoint(tuple(start), tuple(verify))


def with_point(model: RouterModel, point: OperatingPoint, metadata: dict[str, Any]) -> RouterModel:
    """`model` with another operating point and metadata (the fitted parts are shared)."""
    return RouterModel(
        model.ladder, model.scorers, model.verifiers, point, model.cost_model, model.cost_reference_log_usd, metadata
    )


def calibrate_model(
    model: RouterModel,
    rows: Sequence[OutcomeRow],
    models: Sequence[str],
    target_quality_ratio: float = 0.95,
    *,
    bootstrap: int = 200,
    base: str = "default",
    refit: bool = True,
    progress: Callable[[str], None] | None = None,
) -> tuple[RouterModel, dict[str, Any]]:
    """`model` placed for `rows`, a labelled sample of the operator's traffic whose ladder is `models`.

    With `refit`, each rung's verifier head is re-fitted on the sample where that ranks its failures
    better in cross-validation (`router.offline.refit`), and the operating point is chosen on the
    sample's cross-fitted priorities. Returns the calibrated model (a new version; scorers and cost
    model are the base artifact's) and the calibration summary that also goes into its metadata.
    """
    keyed, rungs = rung_rows(rows, models)
    answered = any(all(m in r.responses for m in rungs[:-1]) for r in keyed)
    inputs, _ = router_inputs(model, keyed, rungs, need_answers=answered)
    if len(inputs.scores) < 10:
        raise ValueError(
            f"calibration needs at least 10 rows with scores and costs for every rung, got {len(inputs.scores)}"
        )
    ids = [model.rung_index(r) for r in rungs]
    verifiers, heads = list(model.verifiers), []
    if answered and refit:
        sample = [keyed[i] for i in cascade_rows(keyed, rungs, need_answers=True)]
        cache = FeatureCache(sample)
        parts, _, _ = sub_ladder_parts(model, rungs)
        top = len(model.ladder) - 1
        fitted = refit_verifiers(sample, rungs, parts, inputs, cache.prompt, cache.memo, [top - i for i in ids[:-1]])
        inputs, heads = fitted.inputs, fitted.summary
        for j, i in enumerate(ids[:-1]):
            verifiers[i] = fitted.parts.verifiers[j]
        if progress is not None:
            progress(f"verifier heads: {[h['head'] for h in heads]}")
    if progress is not None:
        progress(f"choosing the operating point on {len(inputs.scores)} rows (answers judged: {answered})")
    chosen = calibrate_point(inputs, target_quality_ratio, bootstrap=bootstrap, progress=progress)
    point = _full_ladder_point(chosen.point, ids, len(model.ladder))
    summary = dict(chosen.summary)
    summary.update(
        {
            "rungs": list(rungs),
            "answers_judged": answered,
            "base_artifact": base,
            "base_version": model.version,
            "verifier_heads": heads,
        }
    )
    fingerprint = hashlib.sha256(json.dumps([model.version, summary], sort_keys=True).encode()).hexdigest()[:6]
    metadata = dict(model.metadata)
    metadata["calibration"] = summary
    metadata["version"] = f"{model.version}-cal-{fingerprint}"
    refitted = RouterModel(
        model.ladder,
        model.scorers,
        tuple(verifiers),
        model.operating_point,
        model.cost_model,
        model.cost_reference_log_usd,
        model.metadata,
    )
    return with_point(refitted, point, metadata), summary
