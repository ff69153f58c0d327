"""Re-fitting the verifier's head on an operator's sample: kept where it ranks better, else the transferred one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from router.offline.calibrate import calibrate_point
from router.offline.cascade import NEVER, best_mix_cost_ratio, simulate
from router.offline.fit import FeatureCache, FeatureMemo, FittedParts, cascade_inputs, fit_parts
from router.offline.outcomes import OutcomeRow
from router.offline.refit import Refit, refit_verifiers
from router.runtime.artifact import load_model, save_model
from router.runtime.model import RouterModel, positive_proba
from router.runtime.verifier import Verifier

LADDER = ("small", "large")
SHORT = "The answer is {n}."
LONG = "Let me work through this step by step. " * 6 + "I am fairly sure the answer is {n}."


def _rows(benchmark: str, n: int, seed: int, long_fails: bool | None) -> list[OutcomeRow]:
    """Two-rung rows; the small rung fails on 40%. Whether its answer was long says it failed
    (`long_fails`), says it succeeded (False), or says nothing (None)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        fails = bool(rng.random() < 0.4)
        long = fails if long_fails is None else (fails == long_fails)
        if long_fails is None:
            long = bool(rng.random() < 0.5)
        answer = (LONG if long else SHORT).format(n=i)
        rows.append(
            OutcomeRow(
                f"{benchmark}-{seed}-{i}",
                benchmark,
                f"Question {benchmark} {seed} {i}: what is {i} plus nothing?",
                {"small": 0.0 if fails else 1.0, "large": 1.0},
                {"small": 0.001, "large": 0.01},
                {"small": answer, "large": f"The answer is {i}."},
            )
        )
    return rows


def _transferred(memo: FeatureMemo) -> FittedParts:
    """Parts trained on a benchmark where a long answer from the small rung means it got it right."""
    train = _rows("other", 300, 1, long_fails=False)
    return fit_parts(train, list(range(len(train))), LADDER, FeatureCache(train, memo))


def _refit(sample: list[OutcomeRow], parts: FittedParts, memo: FeatureMemo) -> Refit:
    cache = FeatureCache(sample, memo)
    inputs = cascade_inputs(sample, list(range(len(sample))), LADDER, parts, cache)
    return refit_verifiers(sample, LADDER, parts, inputs, cache.prompt, memo, [1], seed=7)


def fresh_inputs_features(row: OutcomeRow, memo: FeatureMemo) -> np.ndarray:
    return np.asarray([memo.verifier_row(row, "small", [], 1)], dtype=np.float64)


def _auc_on(rows: list[OutcomeRow], parts: FittedParts, memo: FeatureMemo) -> float:
    inputs = cascade_inputs(rows, list(range(len(rows))), LADDER, parts, FeatureCache(rows, memo))
    failed = inputs.scores[:, 0] < inputs.scores[:, 1]
    return float(roc_auc_score(failed, inputs.verify[:, 0, 0]))


def test_an_in_domain_head_replaces_a_transferred_one_that_ranks_failures_backwards(tmp_path: Path) -> None:
    memo = FeatureMemo()
    parts = _transferred(memo)
    sample = _rows("mine", 200, 2, long_fails=True)
    fresh = _rows("mine", 400, 3, long_fails=True)
    refit = _refit(sample, parts, memo)
    head = refit.summary[0]
    assert head["head"] != "transferred"
    assert head[f"auc {head['head']}"] > head["auc_transferred"] + 0.3
    # On rows neither head saw, the refit ranks this traffic's failures; the transferred one inverts them.
    assert _auc_on(fresh, refit.parts, memo) > 0.9
    assert _auc_on(fresh, parts, memo) < 0.5
    # The operating point chosen on the cross-fitted priorities beats the best mix on the fresh rows.
    chosen = calibrate_point(refit.inputs, 0.95, bootstrap=20)
    assert chosen.summary["policy"] == "router"
    fresh_inputs = cascade_inputs(fresh, list(range(len(fresh))), LADDER, refit.parts, FeatureCache(fresh, memo))
    judged = simulate(fresh_inputs, chosen.point)
    mix = best_mix_cost_ratio(fresh_inputs.scores, fresh_inputs.cost_usd, judged.quality_ratio)
    assert mix is not None and judged.cost_ratio < 0.8 * mix
    # The re-fitted head ships in an artifact the allow-list loads, and the live verifier reads it alike.
    model = RouterModel(
        ("small", "large"),
        parts.scorers,
        refit.parts.verifiers,
        chosen.point,
        parts.cost_model,
        parts.cost_reference_log_usd,
        {"version": "refit-test"},
    )
    save_model(model, tmp_path / "refit.skops")
    verifier = Verifier(load_model(tmp_path / "refit.skops"))
    row = fresh[0]
    live = verifier.probability(row.prompt, row.responses["small"], rung=0)
    fitted = positive_proba(refit.parts.verifiers[0], fresh_inputs_features(row, memo))
    assert abs(live - float(fitted[0])) < 1e-9


def test_without_a_signal_in_the_sample_the_transferred_head_and_the_fixed_mix_stay() -> None:
    memo = FeatureMemo()
    parts = _transferred(memo)
    sample = _rows("mine", 200, 4, long_fails=None)
    refit = _refit(sample, parts, memo)
    assert refit.summary[0]["head"] == "transferred"
    assert refit.parts.verifiers[0] is parts.verifiers[0]
    chosen = calibrate_point(refit.inputs, 0.95, bootstrap=20)
    assert chosen.summary["policy"] == "fixed-mix"
    assert chosen.point.verify_thresholds == (NEVER,)
