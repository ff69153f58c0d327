"""Re-fitting the top rung's cost estimate on the operator's sample (the prices at hand).

Escalation priorities and per-cost start scores divide a probability by the prompt's estimated
top-rung cost over a typical prompt's. The shipped cost model learned that from the training tables'
prices and prompts; an operator's traffic has its own lengths and prices. The sample carries what
the top rung cost for each prompt, so a cost model of the same type is fitted on it and kept when,
in cross-validation by question group, it predicts the sample's relative costs clearly better: mean
absolute error of log cost, each side centred on its median (the level is irrelevant, only the ratio
to a typical prompt is used). On MMLU (costs driven by prompt length) the refit made per-cost pre-routing
beat the best mix; the transferred model missed its lengths (docs/router.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from router.offline.cascade import CascadeInputs
from router.offline.fit import make_cost_pipeline
from router.offline.outcomes import OutcomeRow
from router.offline.refit import REFIT_FOLDS, question_folds
from router.runtime.model import relative_from_log, relative_top_cost

FloatArray = NDArray[np.float64]
# A refit must lower the centred error by this share, and by this much in log cost (5%), to replace
# the transferred model. Where every prompt costs about the same, a "better" fit only re-orders
# tied priorities by noise: on Winogrande (errors 0.008 -> 0.004) that let the agreement cascade
# fit its sample and land under the quality target.
MIN_ERROR_GAIN = 0.1
MIN_ERROR_DROP = 0.05
MIN_ROWS = 30


@dataclass(frozen=True)
class CostRefit:
    cost_model: Any
    reference_log_usd: float
    inputs: CascadeInputs
    summary: dict[str, Any]
    refitted: bool


def _centred_error(predicted: FloatArray, actual: FloatArray) -> float:
    return float(np.mean(np.abs((predicted - np.median(predicted)) - (actual - np.median(actual)))))


def refit_cost_model(
    rows: Sequence[OutcomeRow],
    inputs: CascadeInputs,
    prompt: FloatArray,
    cost_model: Any,
    reference_log_usd: float,
    *,
    seed: int = 7,
) -> CostRefit:
    """Keep `cost_model` or re-fit one on `rows` (see module); `inputs`/`prompt` are the rows' arrays.

    With a refit, the returned inputs carry relative costs from cross-fitted predictions and the
    escalation priorities re-scaled to them (the rows' own costs never score themselves).
    """
    log_cost = np.log(np.maximum(inputs.cost_usd[:, -1], 1e-12))
    summary: dict[str, Any] = {"rows": len(rows), "model": "transferred"}
    keep = CostRefit(cost_model, reference_log_usd, inputs, summary, False)
    if len(rows) < MIN_ROWS:
        summary["why"] = f"fewer than {MIN_ROWS} rows"
        return keep
    transferred = (
        np.asarray(cost_model.predict(prompt), dtype=np.float64) if cost_model is not None else np.zeros(len(rows))
    )
    fold = question_folds(rows, seed)
    oof = np.full(len(rows), np.nan)
    for f in range(REFIT_FOLDS):
        test = fold == f
        if test.any() and (~test).sum() >= MIN_ROWS // 2:
            oof[test] = make_cost_pipeline().fit(prompt[~test], log_cost[~test]).predict(prompt[test])
    if np.isnan(oof).any():
        summary["why"] = "a fold too small to fit"
        return keep
    base, refit = _centred_error(transferred, log_cost), _centred_error(oof, log_cost)
    summary.update({"error_transferred": round(base, 4), "error_refit": round(refit, 4)})
    if not (refit <= (1.0 - MIN_ERROR_GAIN) * base and base - refit >= MIN_ERROR_DROP):
        return keep
    model = make_cost_pipeline().fit(prompt, log_cost)
    reference = float(np.median(log_cost))
    old = inputs.relative_cost
    if old is None:
        old = relative_top_cost(cost_model, reference_log_usd, prompt)
    summary["model"] = "refit"
    return CostRefit(model, reference, _rescaled(inputs, old, relative_from_log(oof, reference)), summary, True)


def _rescaled(inputs: CascadeInputs, old: FloatArray, relative: FloatArray) -> CascadeInputs:
    """`inputs` whose priorities were divided by `old` relative costs, divided by `relative` instead."""
    return replace(inputs, verify=inputs.verify * (old / relative)[:, None, None], relative_cost=relative)


def with_cost_model(
    inputs: CascadeInputs, prompt: FloatArray, cost_model: Any, reference_log_usd: float
) -> CascadeInputs:
    """`inputs` re-scaled to another cost model's relative costs for these prompts."""
    relative = relative_top_cost(cost_model, reference_log_usd, prompt)
    old = inputs.relative_cost if inputs.relative_cost is not None else np.ones(len(relative))
    return _rescaled(inputs, old, relative)
