"""Leave-one-benchmark-out: how the router does on traffic it was not trained on.

For each benchmark: train the scorers and verifiers on every other benchmark, calibrate the
operating point on a 20% sample of the held-out one (as an operator would, `router calibrate`),
and judge it on the other 80%, beside the baselines: the cheapest fixed mix of tiers at the same
quality, random and oracle pre-routing (APGR), and the oracle cascade (each request served by the
cheapest rung that does as well as the top). Rungs are the models the table has: a benchmark with
two of them is judged on a two-rung ladder.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from router.offline.calibrate import calibrate_point, require_sample
from router.offline.cascade import CascadeInputs, best_mix_cost_ratio, simulate
from router.offline.fit import FeatureCache, FeatureMemo, cascade_inputs, cascade_rows, fit_parts, group_of
from router.offline.metrics import apgr, oracle_score, sweep
from router.offline.outcomes import OutcomeRow
from router.offline.sample_fit import fit_to_sample

Progress = Callable[[str], None]


@dataclass(frozen=True)
class FoldPlan:
    """How each fold is calibrated: the quality target, the held-out share calibrated on, the seed."""

    target_quality_ratio: float = 0.95
    calibration_share: float = 0.2
    seed: int = 7
    # Re-fit each rung's verifier head and fit a lexical pre-router head on the calibration sample
    # where that ranks failures better (router.offline.refit, router.offline.lexical); False
    # calibrates the transferred parts' thresholds only.
    refit: bool = True


@dataclass(frozen=True)
class Fold:
    benchmark: str
    summary: dict[str, Any]


def _quiet(_: str) -> None:
    return None


def split_sample(rows: Sequence[OutcomeRow], share: float, seed: int) -> tuple[list[int], list[int]]:
    """(calibration, evaluation) indices: `share` of the question groups, drawn by a seeded hash."""
    calib: list[int] = []
    rest: list[int] = []
    for i, row in enumerate(rows):
        draw = zlib.crc32(f"{seed}:{group_of(row)}".encode()) / 2**32
        (calib if draw < share else rest).append(i)
    return calib, rest


def _ladder(rows: Sequence[OutcomeRow], rungs: Sequence[str]) -> list[str]:
    return [r for r in rungs if sum(1 for row in rows if r in row.scores) >= len(rows) // 2]


def _oracle_cost(inputs: CascadeInputs) -> float:
    """Cost / always-top when each request goes to the cheapest rung scoring as well as the top."""
    good = inputs.scores >= inputs.scores[:, -1:] - 1e-9
    first = np.argmax(good, axis=1)
    paid = inputs.cost_usd[np.arange(len(first)), first].sum()
    return float(paid / inputs.cost_usd[:, -1].sum())


def _r(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def run_fold(
    train: Sequence[OutcomeRow],
    held: Sequence[OutcomeRow],
    rungs: Sequence[str],
    memo: FeatureMemo,
    plan: FoldPlan = FoldPlan(),
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """Train on `train`, calibrate on a share of `held`, judge on the rest (rows keyed by rung)."""
    target_quality_ratio, seed = plan.target_quality_ratio, plan.seed
    ladder = _ladder(held, rungs)
    model_top = len(rungs) - 1
    ids = [rungs.index(r) for r in ladder]
    cache = FeatureCache(train, memo)
    progress(f"  fitting on {len(train)} rows")
    parts = fit_parts(train, list(range(len(train))), list(rungs), cache)
    sub = type(parts)(
        tuple(parts.scorers[i] for i in ids[:-1]),
        tuple(parts.verifiers[i] for i in ids[:-1]),
        parts.cost_model,
        parts.cost_reference_log_usd,
    )
    answered = any(all(m in r.responses for m in ladder[:-1]) for r in held)
    idx = cascade_rows(held, ladder, need_answers=answered)
    rows = [held[i] for i in idx]
    require_sample(len(rows), held, ladder)
    inputs = cascade_inputs(
        rows, list(range(len(rows))), ladder, sub, FeatureCache(rows, memo), rung_ids=ids[:-1], model_top=model_top
    )
    calib, rest = split_sample(rows, plan.calibration_share, seed)
    progress(f"  calibrating on {len(calib)} rows, judging on {len(rest)}")
    calib_rows, rest_rows = [rows[i] for i in calib], [rows[i] for i in rest]
    calib_cache, rest_cache = FeatureCache(calib_rows, memo), FeatureCache(rest_rows, memo)
    fitted = fit_to_sample(
        calib_rows,
        ladder,
        sub,
        inputs.subset(calib),
        calib_cache,
        [model_top - i for i in ids[:-1]],
        answered=answered,
        refit=plan.refit,
        seed=seed,
        progress=lambda line: progress(f"  {line}"),
    )
    calib_inputs, judged_inputs = fitted.inputs, inputs.subset(rest)
    if fitted.verifiers is not None:
        judged_inputs = cascade_inputs(
            rest_rows,
            list(range(len(rest_rows))),
            ladder,
            fitted.verifiers.parts,
            rest_cache,
            rung_ids=ids[:-1],
            model_top=model_top,
        )
    judged_inputs = fitted.applied(judged_inputs, rest_rows, rest_cache.prompt)
    chosen = calibrate_point(calib_inputs, target_quality_ratio, seed=seed)
    judged = simulate(judged_inputs, chosen.point)
    mix = best_mix_cost_ratio(judged_inputs.scores, judged_inputs.cost_usd, judged.quality_ratio)
    mix95 = best_mix_cost_ratio(judged_inputs.scores, judged_inputs.cost_usd, target_quality_ratio)
    small, large = judged_inputs.scores[:, 0], judged_inputs.scores[:, -1]
    pre = sweep(small, large, judged_inputs.start_scores[:, 0])
    top_q = float(large.mean())
    return {
        "ladder": list(ladder),
        "answers": answered,
        "rows_calibration": len(calib),
        "rows_judged": len(rest),
        "policy": chosen.summary["policy"],
        "start_mix": list(chosen.point.start_mix),
        "calibration": chosen.summary,
        **fitted.summary(),
        "quality_ratio": _r(judged.quality_ratio),
        "cost_ratio": _r(judged.cost_ratio),
        "best_mix_cost_ratio": _r(mix),
        "cost_vs_best_mix": _r(judged.cost_ratio / mix if mix else None),
        "fixed_mix_cost_at_target": _r(mix95),
        "served_share": [round(x, 4) for x in judged.served_share],
        "rung_quality_ratio": [_r(float(q) / top_q) for q in judged_inputs.scores.mean(axis=0)],
        "rung_cost_ratio": [
            _r(float(c) / float(judged_inputs.cost_usd[:, -1].sum())) for c in judged_inputs.cost_usd.sum(axis=0)
        ],
        "apgr": _r(apgr(pre)),
        "random_apgr": 0.5,
        "oracle_apgr": _r(apgr(sweep(small, large, oracle_score(small, large)))),
        "oracle_cost_ratio": _r(_oracle_cost(judged_inputs)),
    }


def leave_one_benchmark_out(
    rows: Sequence[OutcomeRow],
    rungs: Sequence[str],
    memo: FeatureMemo,
    plan: FoldPlan = FoldPlan(),
    *,
    benchmarks: Sequence[str] | None = None,
    holdout: Sequence[OutcomeRow] | None = None,
    progress: Progress = _quiet,
) -> list[Fold]:
    """One fold per benchmark of `rows` (keyed by rung): see the module's docstring.

    With `holdout`, train on all of `rows` and hold out each benchmark of `holdout` instead.
    """
    pool = rows if holdout is None else holdout
    names = sorted({r.benchmark for r in pool}) if benchmarks is None else list(benchmarks)
    folds: list[Fold] = []
    with threadpool_limits(limits=1):
        for n, bench in enumerate(names, start=1):
            progress(f"fold {n}/{len(names)}: {bench}")
            train = [r for r in rows if r.benchmark != bench] if holdout is None else list(rows)
            held = [r for r in pool if r.benchmark == bench]
            try:
                summary = run_fold(train, held, rungs, memo, plan, progress)
            except ValueError as err:
                # One benchmark too small or unpriced does not stop the others; the table says why.
                progress(f"  {bench}: skipped: {err}")
                folds.append(Fold(bench, {"skipped": str(err)}))
                continue
            progress(
                f"  {bench}: quality {summary['quality_ratio']} cost {summary['cost_ratio']}"
                f" best mix {summary['best_mix_cost_ratio']} -> cost_vs_best_mix {summary['cost_vs_best_mix']}"
                f" ({summary['policy']})"
            )
            folds.append(Fold(bench, summary))
    return folds


def fold_table(folds: Sequence[Fold]) -> str:
    """The folds as a Markdown table (what docs/router.md shows)."""
    head = (
        "| held out | rungs | calibrate / judge rows | policy | quality | cost | best mix at that quality"
        " | cost_vs_best_mix | fixed mix at target | pre-router APGR (random 0.5) | oracle APGR | oracle cost |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for fold in folds:
        s = fold.summary
        if "skipped" in s:
            lines.append(f"| {fold.benchmark} | | | skipped: {s['skipped']} |" + " |" * 8)
            continue
        decided = s["calibration"].get("decided_on")
        policy = f"{s['policy']} ({decided})" if decided else s["policy"]
        policy = policy if s["answers"] else f"{policy}, no answers in table"
        lines.append(
            f"| {fold.benchmark} | {len(s['ladder'])} | {s['rows_calibration']} / {s['rows_judged']} | {policy}"
            f" | {s['quality_ratio']} | {s['cost_ratio']} | {s['best_mix_cost_ratio']} | **{s['cost_vs_best_mix']}**"
            f" | {s['fixed_mix_cost_at_target']} | {s['apgr']} | {s['oracle_apgr']} | {s['oracle_cost_ratio']} |"
        )
    return "\n".join(lines)
