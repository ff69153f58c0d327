"""Calibration on the operator's own traffic: the cascade's operating point, or the pre-router's thresholds.

`calibrate_point` places a single-decision policy (the agreement cascade or a pre-router) on a
labelled sample, falling back to a fixed mix of tiers where neither earns its keep; `calibrate_model`
first fits what the sample can teach (verifier heads, lexical pre-router heads, the cost model) and
writes the result into a new artifact. The threshold functions below place the pre-router alone in a
profile.

The pre-router sends a request to the first tier whose score is under that tier's threshold. One
shared threshold t for every tier keeps the list ascending (the profile requires it) and leaves a
single number to search: a request reaches the top tier only when every cheaper tier scores >= t.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from router.offline.cascade import (
    NEVER,
    CascadeInputs,
    CascadeResult,
    best_mix_cost_ratio,
    cheapest_fixed_mix,
    choose_agreement_point,
    choose_prompt_point,
    simulate,
)
from router.offline.fit import FeatureCache, cascade_rows
from router.offline.outcomes import OutcomeRow
from router.offline.report import router_inputs, sub_ladder_parts
from router.offline.sample_fit import fit_to_sample
from router.offline.train import rung_rows
from router.runtime.lexical import LexicalHead
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


# Resamples behind "reaches the target" (see choose_agreement_point) and the share of them that must.
ROBUST_RESAMPLES = 100
ROBUST_CONFIDENCE = 0.9
# Thresholds of the deciding rung tried on a sample: quantiles of its priorities in steps of 5%.
CALIBRATION_STEPS = 21


# The deciding score must rank its rung's failures above chance in this share of resamples.
SIGNAL_CONFIDENCE = 0.95
# ... and that lower bound must lie above chance.
SIGNAL_FLOOR = 0.5
# Fewer failures of the deciding rung than this in the sample and no router is kept: calibrating on
# 30-150-row subsamples of the training folds, routers kept on fewer than 10 failures landed under
# the quality target on the other rows about half the time (docs/router.md).
MIN_FAILURES = 10


# A sample with fewer rows than this (every rung scored and priced) is refused: nothing can be placed.
MIN_SAMPLE_ROWS = 10


def require_sample(usable: int, rows: Sequence[OutcomeRow], ladder: Sequence[str]) -> None:
    """Refuse a sample of `rows` in which only `usable` have every rung of `ladder` scored and priced."""
    if usable >= MIN_SAMPLE_ROWS:
        return
    unpriced = [m for m in ladder if not any(m in r.cost_usd for r in rows)]
    why = f"; no row prices rung(s) {unpriced} (give --price MODEL=USD per million tokens)" if unpriced else ""
    raise ValueError(f"{usable} rows with every rung's score and cost, {MIN_SAMPLE_ROWS} needed{why}")


def signal_auc(
    priority: FloatArray, failed: NDArray[np.bool_], resamples: int = 200, seed: int = 7
) -> tuple[float, float]:
    """How well a policy's deciding score ranks its rung's failures (answers scoring under the top's).

    Returns the AUC on the sample and its lower (1 - SIGNAL_CONFIDENCE) bootstrap quantile; (0.5, 0.5)
    where nothing can be judged (no score, or no failure to rank). A cost gain on a couple of hundred
    rows alone is not evidence: a threshold and a share searched on noise found one in about one
    sample in twelve (tests/unit/test_router_transfer.py), and on new traffic that router cost 1.3x the mix.
    """
    keep = np.isfinite(priority)
    priority, failed = priority[keep], failed[keep]
    if failed.all() or not failed.any():
        return 0.5, 0.5
    rng = np.random.default_rng(seed + 3)
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, len(failed), len(failed))
        if failed[pick].any() and not failed[pick].all():
            values.append(float(roc_auc_score(failed[pick], priority[pick])))
    low = float(np.quantile(values, 1.0 - SIGNAL_CONFIDENCE)) if values else 0.5
    return float(roc_auc_score(failed, priority)), low


class _Robust(TypedDict):
    steps: int
    resamples: int
    confidence: float
    seed: int


def _robust(seed: int) -> _Robust:
    return {"steps": CALIBRATION_STEPS, "resamples": ROBUST_RESAMPLES, "confidence": ROBUST_CONFIDENCE, "seed": seed}


@dataclass(frozen=True)
class _Candidate:
    """One single-decision policy placed on the sample, and how well its deciding score ranks failures."""

    kind: str
    point: OperatingPoint
    result: CascadeResult
    auc: tuple[float, float]
    failures: int


def _policies(inputs: CascadeInputs, target: float, seed: int) -> list[_Candidate]:
    """The two policies a sample can place: decide on the answers (agreement) or on the prompt."""
    top = inputs.scores[:, -1]
    last = inputs.scores.shape[1] - 2
    point, result = choose_agreement_point(inputs, target, **_robust(seed))
    failed = inputs.scores[:, last] < top
    auc = signal_auc(inputs.verify[:, 0, last], failed, seed=seed)
    out = [_Candidate("agreement", point, result, auc, int(failed.sum()))]
    point, result = choose_prompt_point(inputs, target, **_robust(seed))
    rung = next((k for k, t in enumerate(point.start_thresholds) if t != -1.0), None)
    if rung is not None:
        failed = inputs.scores[:, rung] < top
        auc = signal_auc(inputs.start_scores[:, rung], failed, seed=seed)
        out.append(_Candidate("pre-router", point, result, auc, int(failed.sum())))
    return out


def calibrate_point(
    inputs: CascadeInputs,
    target_quality_ratio: float = 0.95,
    *,
    bootstrap: int = 200,
    seed: int = 7,
    min_gain: float = 0.1,
    progress: Callable[[str], None] | None = None,
) -> Calibrated:
    """The operating point for a labelled sample of the operator's own traffic.

    Two single-decision policies are placed on the sample (`_policies`): the agreement cascade
    (`choose_agreement_point`) and a pre-router (`choose_prompt_point`), each at its cheapest point
    reaching the target in 90% of bootstrap resamples (on the mean alone a point chosen on a few
    hundred rows lands under the target on new traffic about half the time, and a fixed mix just
    under the target is far cheaper). The same rule prices the cheapest fixed mix of tiers. A policy
    is kept only when it costs at least `min_gain` less than that mix, its deciding score ranks the
    sample's failures above chance with 95% confidence (`signal_auc`), and the sample holds at least
    `MIN_FAILURES` of them; the cheaper of the kept ones wins. Otherwise the policy is the mix (start
    rungs drawn by share, no escalation), so a router that cannot earn its keep costs nothing extra.
    The 90% intervals are those of the chosen point over `bootstrap` resamples of the sample (the
    noise of the estimate, not of the choice).
    """
    mix_point, mix_result = cheapest_fixed_mix(
        inputs, target_quality_ratio, resamples=ROBUST_RESAMPLES, confidence=ROBUST_CONFIDENCE, seed=seed
    )
    candidates = _policies(inputs, target_quality_ratio, seed)
    earning = [
        c
        for c in candidates
        if c.result.cost_ratio <= (1.0 - min_gain) * mix_result.cost_ratio
        and c.auc[1] > SIGNAL_FLOOR
        and c.failures >= MIN_FAILURES
    ]
    point, result, kind, decided_on = mix_point, mix_result, "fixed-mix", None
    if earning:
        chosen = min(earning, key=lambda c: c.result.cost_ratio)
        point, result, kind, decided_on = chosen.point, chosen.result, "router", chosen.kind
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
        "decided_on": decided_on,
        "candidates": {
            c.kind: {
                "quality_ratio": round(c.result.quality_ratio, 4),
                "cost_ratio": round(c.result.cost_ratio, 4),
                "signal_auc": round(c.auc[0], 4),
                "signal_auc_low": round(c.auc[1], 4),
                "failures": c.failures,
            }
            for c in candidates
        },
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
    return OperatingPoint(tuple(start), tuple(verify), start_per_cost=point.start_per_cost)


def with_point(model: RouterModel, point: OperatingPoint, metadata: dict[str, Any]) -> RouterModel:
    """`model` with another operating point and metadata (the fitted parts are shared)."""
    return RouterModel(
        model.ladder,
        model.scorers,
        model.verifiers,
        point,
        model.cost_model,
        model.cost_reference_log_usd,
        metadata,
        model.lexical_heads,
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

    With `refit`, each rung's verifier head is re-fitted on the sample, and a lexical pre-router head
    fitted, where that ranks its failures better in cross-validation (`router.offline.refit`,
    `router.offline.lexical`), and the operating point is chosen on the sample's cross-fitted
    priorities and start scores. Returns the calibrated model (a new version; scorers and cost
    model are the base artifact's) and the calibration summary that also goes into its metadata.
    """
    keyed, rungs = rung_rows(rows, models)
    answered = any(all(m in r.responses for m in rungs[:-1]) for r in keyed)
    inputs, _ = router_inputs(model, keyed, rungs, need_answers=answered)
    require_sample(len(inputs.scores), keyed, rungs)
    ids = [model.rung_index(r) for r in rungs]
    # The rows behind `inputs` (row i is sample[i]), and their prompt features, for every refit.
    sample = [keyed[i] for i in cascade_rows(keyed, rungs, answered)]
    top = len(model.ladder) - 1
    parts, _, _ = sub_ladder_parts(model, rungs)
    fitted = fit_to_sample(
        sample,
        rungs,
        parts,
        inputs,
        FeatureCache(sample),
        [top - i for i in ids[:-1]],
        answered=answered,
        refit=refit,
        progress=progress,
    )
    inputs = fitted.inputs
    verifiers = list(model.verifiers)
    if fitted.verifiers is not None:
        for j, i in enumerate(ids[:-1]):
            verifiers[i] = fitted.verifiers.parts.verifiers[j]
    cost_model, reference = model.cost_model, model.cost_reference_log_usd
    if fitted.cost is not None:
        cost_model, reference = fitted.cost.cost_model, fitted.cost.reference_log_usd
    # A rung keeps the base artifact's lexical head unless the sample fits a better one.
    lexical: list[LexicalHead | None] = list(model.lexical_heads) or [None] * top
    if fitted.start is not None:
        for j, i in enumerate(ids[:-1]):
            lexical[i] = fitted.start.heads[j] or lexical[i]
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
            **fitted.summary(),
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
        cost_model,
        reference,
        model.metadata,
        tuple(lexical) if any(h is not None for h in lexical) else (),
    )
    return with_point(refitted, point, metadata), summary
