"""Judge a trained router on outcome rows: the pre-routing sweep and the cascade at its stored point.

`evaluate` returns plain JSON-safe numbers (the keys `tiergate router eval --json` prints) and the
curves for plotting. It has no knob that tunes the cascade: the operating point is the artifact's
(`tiergate router calibrate` re-chooses it on an operator's sample). Beside the router it prices
the cheapest fixed random mix of tiers reaching the same quality (`best_mix_cost_ratio`), the
baseline a router has to beat to be worth running.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router.offline.cascade import ALWAYS, NEVER, CascadeInputs, CascadeResult, best_mix_cost_ratio, simulate
from router.offline.fit import FeatureCache, FittedParts, cascade_inputs, cascade_rows
from router.offline.lexical import head_proba, lexical_matrix, with_lexical_scores
from router.offline.metrics import SweepCurve, apgr, cpt, oracle_score, random_apgr, sweep
from router.offline.outcomes import OutcomeRow
from router.offline.train import rung_rows
from router.runtime.model import RouterModel, positive_proba
from router.runtime.operating_point import OperatingPoint, cumulative_shares


@dataclass(frozen=True)
class Evaluation:
    summary: dict[str, Any]
    router_curve: SweepCurve | None = None
    oracle_curve: SweepCurve | None = None
    cascade_points: list[tuple[float, float]] = field(default_factory=list)  # (cost ratio, quality ratio)
    cascade_result: CascadeResult | None = None


def _round(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 4)


def prompt_scores(model: RouterModel, rung: str, rows: Sequence[OutcomeRow]) -> np.ndarray[Any, Any]:
    """The scorer's P(rung is not good enough) for each row's prompt (the rung's lexical head where it has one)."""
    k = model.rung_index(rung)
    if k == len(model.ladder) - 1:
        return np.zeros(len(rows))
    head = model.lexical_head(k)
    if head is not None:
        return head_proba(head, lexical_matrix(rows))
    cache = FeatureCache(rows)
    return positive_proba(model.scorers[k], cache.prompt) if len(rows) else np.zeros(0)


def _sweep_summary(
    model: RouterModel, rows: Sequence[OutcomeRow], small: str, large: str
) -> tuple[dict[str, Any], SweepCurve | None, SweepCurve | None]:
    usable = [r for r in rows if r.has((small, large))]
    if not usable:
        return {"rows": 0}, None, None
    s = [r.scores[small] for r in usable]
    lg = [r.scores[large] for r in usable]
    curve = sweep(s, lg, prompt_scores(model, small, usable))
    oracle = sweep(s, lg, oracle_score(s, lg))
    summary = {
        "rows": len(usable),
        "small_quality": _round(curve.small_quality),
        "large_quality": _round(curve.large_quality),
        "apgr": _round(apgr(curve)),
        "cpt50": _round(cpt(curve, 0.5)),
        "cpt80": _round(cpt(curve, 0.8)),
        "random_apgr": _round(random_apgr(s, lg)),
        "oracle_apgr": _round(apgr(oracle)),
        "oracle_cpt50": _round(cpt(oracle, 0.5)),
    }
    return summary, curve, oracle


def sub_ladder_parts(model: RouterModel, ladder: Sequence[str]) -> tuple[FittedParts, list[int], OperatingPoint]:
    ids = [model.rung_index(m) for m in ladder]
    if ids != sorted(ids) or len(set(ids)) != len(ids):
        raise ValueError(f"the cascade ladder {list(ladder)} must climb the model's ladder {list(model.ladder)}")
    if ids[-1] != len(model.ladder) - 1:
        raise ValueError("the cascade must end at the model's top rung (its targets are relative to it)")
    below = ids[:-1]
    parts = FittedParts(
        tuple(model.scorers[i] for i in below),
        tuple(model.verifiers[i] for i in below),
        model.cost_model,
        model.cost_reference_log_usd,
    )
    op = model.operating_point
    mix: tuple[float, ...] = ()
    if op.mixes:
        # Rungs left out of the ladder hand their share to the next rung up that is in it.
        shares = [0.0] * len(ids)
        for rung, share in enumerate(op.start_mix):
            shares[next(j for j, i in enumerate(ids) if i >= rung)] += share
        mix = tuple(shares)
    point = OperatingPoint(
        cumulative_shares(mix) if mix else tuple(op.start_thresholds[i] for i in below),
        tuple(op.verify_thresholds[i] for i in below),
        mix,
        op.start_per_cost,
    )
    return parts, below, point


def router_inputs(
    model: RouterModel, rows: Sequence[OutcomeRow], ladder: Sequence[str], need_answers: bool = True
) -> tuple[CascadeInputs, OperatingPoint]:
    """The replay arrays of `rows` (keyed by rung) for `ladder` under the model, and its operating point."""
    parts, ids, point = sub_ladder_parts(model, ladder)
    idx = cascade_rows(rows, ladder, need_answers)
    cache = FeatureCache([rows[i] for i in idx])
    inputs = cascade_inputs(
        [rows[i] for i in idx],
        list(range(len(idx))),
        ladder,
        parts,
        cache,
        rung_ids=ids,
        model_top=len(model.ladder) - 1,
    )
    return with_lexical_scores(inputs, [rows[i] for i in idx], [model.lexical_head(i) for i in ids]), point


def mix_summary(inputs: CascadeInputs, result: CascadeResult) -> dict[str, Any]:
    """The fixed-mix baseline at the router's quality, and the router's cost against it."""
    mix = best_mix_cost_ratio(inputs.scores, inputs.cost_usd, result.quality_ratio)
    ratio = result.cost_ratio / mix if mix is not None and mix > 0 else None
    return {
        "best_mix_cost_ratio": None if mix is None else _round(mix),
        "cost_vs_best_mix": None if ratio is None else _round(ratio),
    }


def cascade_summary(
    model: RouterModel, rows: Sequence[OutcomeRow], ladder: Sequence[str], need_answers: bool = True
) -> tuple[dict[str, Any], CascadeResult | None, list[tuple[float, float]]]:
    """Routing + cascade over `ladder` at the model's operating point, and its threshold curve."""
    inputs, point = router_inputs(model, rows, ladder, need_answers)
    if not len(inputs.scores):
        return {"cascade_rows": 0}, None, []
    result = simulate(inputs, point)
    # The curve for the plot: the operating point with the last rung's verifier threshold swept
    # from "escalate everything" to "accept everything"; it passes through the operating point.
    last = inputs.verify[:, :, len(ladder) - 2]
    finite = last[np.isfinite(last)]
    sweep_taus = [
        ALWAYS,
        *(np.quantile(finite, np.linspace(0.0, 1.0, 41)).tolist() if finite.size else []),
        NEVER,
    ]
    curve: list[tuple[float, float]] = []
    for tau in sorted(set(sweep_taus)):
        taus = (*point.verify_thresholds[:-1], float(tau))
        r = simulate(inputs, OperatingPoint(point.start_thresholds, taus, point.start_mix, point.start_per_cost))
        curve.append((r.cost_ratio, r.quality_ratio))
    curve.sort()
    summary = {
        "cascade_rows": len(inputs.scores),
        "cascade_quality_ratio": _round(result.quality_ratio),
        "cascade_cost_ratio": _round(result.cost_ratio),
        "cascade_served_share": [round(x, 4) for x in result.served_share],
        **mix_summary(inputs, result),
    }
    return summary, result, curve


def evaluate(
    model: RouterModel,
    rows: Sequence[OutcomeRow],
    small: str,
    large: str,
    mid: str | None = None,
) -> Evaluation:
    """The eval keys (apgr, cpt50, cpt80, random/oracle APGR, cascade ratios, best mix) plus a per-benchmark split.

    `small`, `mid`, `large` are whichever model keys of `rows` stand on those rungs; rows are
    re-keyed to the rungs (missing costs estimated, router.offline.costs) before anything is judged.
    """
    models = [small, mid, large] if mid else [small, large]
    keyed, rungs = rung_rows(rows, models)
    summary, curve, oracle = _sweep_summary(model, keyed, rungs[0], rungs[-1])
    need_answers = any(all(m in r.responses for m in rungs[:-1]) for r in keyed)
    c_summary, c_result, c_curve = cascade_summary(model, keyed, rungs, need_answers)
    summary.update(c_summary)
    for key in ("cascade_quality_ratio", "cascade_cost_ratio", "best_mix_cost_ratio", "cost_vs_best_mix"):
        summary.setdefault(key, None)
    summary["cascade_judged_answers"] = need_answers
    per: dict[str, Any] = {}
    for bench in sorted({r.benchmark for r in keyed}):
        subset = [r for r in keyed if r.benchmark == bench]
        b_summary, _, _ = _sweep_summary(model, subset, rungs[0], rungs[-1])
        b_summary.update(cascade_summary(model, subset, rungs, need_answers)[0])
        per[bench] = b_summary
    summary["per_benchmark"] = per
    summary["models"] = {rung: key for rung, key in zip(rungs, models, strict=True)}
    summary["model_version"] = model.version
    return Evaluation(summary, curve, oracle, c_curve, c_result)
