"""Train a complete router: out-of-fold metrics, the cascade operating point, the final fit.

Every choice made here (the operating point above all) is made on out-of-fold predictions of the
training rows, never on rows the caller keeps for evaluation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from router.offline.cascade import choose_operating_point
from router.offline.costs import fill_costs
from router.offline.fit import FeatureCache, Progress, _quiet, fit_parts, out_of_fold
from router.offline.metrics import apgr, cpt, sweep
from router.offline.outcomes import DEFAULT_LADDER, OutcomeRow, rows_hash, to_rungs
from router.runtime.answer_features import VERIFIER_FEATURE_NAMES
from router.runtime.model import ARTIFACT_FORMAT_VERSION, RouterModel, ladder_rungs


def _sweep_metrics(rows: Sequence[OutcomeRow], scores: np.ndarray[Any, Any], small: str, large: str) -> dict[str, Any]:
    idx = [i for i, r in enumerate(rows) if r.has((small, large)) and np.isfinite(scores[i])]
    if not idx:
        return {}
    s = [rows[i].scores[small] for i in idx]
    lg = [rows[i].scores[large] for i in idx]
    curve = sweep(s, lg, scores[idx])
    return {"rows": len(idx), "apgr": round(apgr(curve), 4), "cpt50": round(cpt(curve, 0.5), 4)}


def rung_rows(rows: Sequence[OutcomeRow], models: Sequence[str]) -> tuple[list[OutcomeRow], tuple[str, ...]]:
    """`rows` re-keyed to the rungs `models` stand on (cheapest first), missing costs estimated."""
    rungs = ladder_rungs(len(models))
    return fill_costs(to_rungs(rows, dict(zip(models, rungs, strict=True)))), rungs


def train_router(
    rows: Sequence[OutcomeRow],
    models: Sequence[str] = DEFAULT_LADDER,
    *,
    target_quality_ratio: float = 0.95,
    max_cost_ratio: float | None = None,
    folds: int = 5,
    progress: Progress = _quiet,
) -> RouterModel:
    """Fit scorers and verifiers for the ladder `models` (model keys, cheapest first) on `rows`.

    The models are only how the table names the rungs: the artifact knows rungs (small/mid/large)
    and what was measured on them. Out-of-fold metrics go into its metadata. Runs single-threaded:
    the boosted trees are small, and OpenMP threads on a busy machine cost far more in spinning
    than they save.
    """
    keyed, rungs = rung_rows(rows, models)
    with threadpool_limits(limits=1):
        model = _train(keyed, rungs, target_quality_ratio, max_cost_ratio, folds, progress)
    model.metadata["training_models"] = list(models)
    return model


def _train(
    rows: Sequence[OutcomeRow],
    ladder: tuple[str, ...],
    target_quality_ratio: float,
    max_cost_ratio: float | None,
    folds: int,
    progress: Progress,
) -> RouterModel:
    progress(f"features for {len(rows)} rows")
    cache = FeatureCache(rows)
    oof = out_of_fold(rows, ladder, cache, folds=folds, progress=progress)
    metrics: dict[str, Any] = {"out_of_fold": {}}
    for k, rung in enumerate(ladder[:-1]):
        metrics["out_of_fold"][f"{rung}->{ladder[-1]}"] = _sweep_metrics(
            rows, oof.prompt_scores[:, k], rung, ladder[-1]
        )
    if len(oof.cascade_idx):
        point, result = choose_operating_point(
            oof.cascade, target_quality_ratio=target_quality_ratio, max_cost_ratio=max_cost_ratio
        )
        metrics["cascade_out_of_fold"] = {
            "rows": len(oof.cascade_idx),
            "quality_ratio": round(result.quality_ratio, 4),
            "cost_ratio": round(result.cost_ratio, 4),
            "served_share": [round(x, 4) for x in result.served_share],
            "start_mix": list(point.start_mix),
            "target_quality_ratio": target_quality_ratio,
            "max_cost_ratio": max_cost_ratio,
        }
    else:
        raise ValueError(
            "no training row has scores, costs and answers for every rung: cannot place the cascade"
            " (tables that record no costs: give --price MODEL=USD per million tokens)"
        )
    progress(f"final fit on {len(rows)} rows")
    parts = fit_parts(rows, list(range(len(rows))), ladder, cache)
    digest = rows_hash(rows)
    benchmarks = sorted({r.benchmark for r in rows})
    # The version names the data and what was learned from it, so a retrained model never
    # masquerades as the one before it even on the same data.
    learned = json.dumps(
        [
            list(ladder),
            VERIFIER_FEATURE_NAMES,
            metrics,
            point.start_thresholds,
            point.verify_thresholds,
            point.start_mix,
        ],
        sort_keys=True,
        default=str,
    )
    fingerprint = hashlib.sha256(learned.encode()).hexdigest()[:6]
    metadata: dict[str, Any] = {
        "version": f"scorer-v{ARTIFACT_FORMAT_VERSION}-{digest[:8]}-{fingerprint}",
        "format_version": ARTIFACT_FORMAT_VERSION,
        "training_data_sha256": digest,
        "training_rows": len(rows),
        "training_benchmarks": benchmarks,
        "metrics": metrics,
    }
    return RouterModel(
        ladder,
        parts.scorers,
        parts.verifiers,
        point,
        parts.cost_model,
        parts.cost_reference_log_usd,
        metadata,
    )
