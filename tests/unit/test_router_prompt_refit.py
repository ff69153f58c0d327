"""Calibration that learns the operator's prompts: a lexical pre-router head and the prices at hand.

The sample has no answers (only a pre-router can be placed), the cheap rung fails on one subject and
not the other, and the top rung's cost follows the prompt's length: the transferred scorer knows
neither, the calibrated artifact must learn both, ship them, and route live as it was judged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from router.offline.calibrate import calibrate_model
from router.offline.cascade import CascadeInputs, best_mix_cost_ratio, simulate
from router.offline.cost_refit import refit_cost_model
from router.offline.fit import FeatureCache
from router.offline.lexical import head_proba, lexical_matrix, refit_start_heads
from router.offline.outcomes import OutcomeRow
from router.offline.report import router_inputs, sub_ladder_parts
from router.offline.train import rung_rows
from router.runtime.artifact import load_model, save_model
from router.runtime.lexical import LexicalHead, hashed_counts
from router.runtime.model import LearnedScorer, RouterModel
from router.runtime.operating_point import OperatingPoint
from router.runtime.policy import PolicyConfig, RoutingRequest, decide
from tests.unit.router_support import LARGE, SMALL, fixture_model

HARD = ("enzyme", "isotope", "catalyst", "orbital", "covalent")
EASY = ("treaty", "empire", "dynasty", "revolution", "monarch")


def _rows(n: int, seed: int, signal: bool = True) -> list[OutcomeRow]:
    """Answerless two-model rows: the small model fails 80% of chemistry questions and 10% of history
    ones (or 40% of either without `signal`); the top model's price grows with the prompt's length."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        hard = bool(rng.random() < 0.4)
        words = HARD if hard else EASY
        topic = " ".join(rng.choice(words, size=3))
        padding = " and please consider it carefully" * int(rng.integers(0, 12))
        prompt = f"Question {seed}-{i} about {topic}: which statement is true{padding}?"
        fail_rate = (0.8 if hard else 0.1) if signal else 0.4
        fails = bool(rng.random() < fail_rate)
        top_cost = 1e-5 * len(prompt)
        rows.append(
            OutcomeRow(
                f"mine-{seed}-{i}",
                "mine",
                prompt,
                {SMALL: 0.0 if fails else 1.0, LARGE: 1.0 if rng.random() < 0.95 else 0.0},
                {SMALL: 0.03 * top_cost, LARGE: top_cost},
            )
        )
    return rows


def _inputs(rows: list[OutcomeRow]) -> CascadeInputs:
    keyed, rungs = rung_rows(rows, [SMALL, LARGE])
    inputs, _ = router_inputs(fixture_model(), keyed, rungs, need_answers=False)
    return inputs


def test_hashed_words_are_bounded_unit_length_and_the_same_offline_and_live() -> None:
    counts = hashed_counts("The enzyme, the enzyme and the catalyst.", 1 << 10)
    assert all(0 <= slot < 1 << 10 for slot in counts)
    assert sum(v * v for v in counts.values()) == pytest.approx(1.0)
    assert hashed_counts("", 64) == {}
    head = LexicalHead(np.random.default_rng(1).normal(size=1 << 10), -0.2)
    rows = _rows(20, 3)
    live = [head.proba(r.prompt) for r in rows]
    offline = head_proba(head, lexical_matrix(rows, 1 << 10))
    assert np.allclose(live, offline, atol=1e-12)


def test_a_lexical_head_is_fitted_where_the_words_say_who_fails_and_not_where_they_do_not() -> None:
    sample = _rows(300, 1)
    refit = refit_start_heads(sample, _inputs(sample))
    entry = refit.summary[0]
    assert entry["head"].startswith("lexical")
    head = refit.heads[0]
    assert head is not None
    fresh = _rows(400, 2)
    failed = [r.scores[SMALL] < r.scores[LARGE] for r in fresh]
    assert roc_auc_score(failed, head_proba(head, lexical_matrix(fresh))) > 0.8
    # The sample's start scores are cross-fitted: each row scored by a head that never saw it.
    assert not np.allclose(refit.inputs.start_scores[:, 0], head_proba(head, lexical_matrix(sample)))
    blind = _rows(300, 4, signal=False)
    assert refit_start_heads(blind, _inputs(blind)).heads == (None,)


def test_the_cost_model_is_refitted_to_the_prices_at_hand() -> None:
    sample = _rows(300, 5)
    keyed, _ = rung_rows(sample, [SMALL, LARGE])
    inputs = _inputs(sample)
    prompt = FeatureCache(keyed).prompt
    model = fixture_model()
    costs = refit_cost_model(keyed, inputs, prompt, model.cost_model, model.cost_reference_log_usd)
    assert costs.refitted
    assert costs.summary["error_refit"] < 0.5 * costs.summary["error_transferred"]
    assert costs.inputs.relative_cost is not None
    lengths = np.asarray([len(r.prompt) for r in keyed], dtype=np.float64)
    assert np.corrcoef(np.log(costs.inputs.relative_cost), np.log(lengths))[0, 1] > 0.9


def test_an_answerless_sample_calibrates_a_pre_router_that_ships_and_routes_live_as_judged(tmp_path: Path) -> None:
    model, summary = calibrate_model(fixture_model(), _rows(500, 6), [SMALL, LARGE], 0.95, bootstrap=20)
    assert summary["policy"] == "router"
    assert summary["decided_on"] == "pre-router"
    assert summary["start_heads"][0]["head"].startswith("lexical")
    assert summary["cost_model"]["model"] == "refit"
    assert model.operating_point.start_per_cost
    save_model(model, tmp_path / "mine.skops")
    loaded = load_model(tmp_path / "mine.skops")
    assert loaded.lexical_head(0) is not None
    assert loaded.operating_point == model.operating_point
    # Judged on later traffic through the same replay `router eval` uses: well under the best mix.
    fresh = _rows(1500, 7)
    inputs = _inputs_for(loaded, fresh)
    judged = simulate(inputs, _two_rung_point(loaded))
    mix = best_mix_cost_ratio(inputs.scores, inputs.cost_usd, judged.quality_ratio)
    assert mix is not None and judged.cost_ratio < 0.8 * mix
    assert judged.quality_ratio >= 0.93
    # The live scorer gives the replay's per-cost start score, and the policy routes by it.
    scorer = LearnedScorer(loaded, ["small", "large"])
    config = PolicyConfig(tier_names=("s", "l"), thresholds=(loaded.operating_point.start_thresholds[0],))
    starts = inputs.start_per_cost()[:, 0]
    for i, row in enumerate(fresh[:50]):
        assert scorer.scores(RoutingRequest(text=row.prompt), 2)[0] == pytest.approx(starts[i], rel=1e-6)
        expected = "s" if starts[i] < config.thresholds[0] else "l"
        assert decide(RoutingRequest(text=row.prompt), config, scorer).tier == expected


def _inputs_for(model: RouterModel, rows: list[OutcomeRow]) -> CascadeInputs:
    keyed, rungs = rung_rows(rows, [SMALL, LARGE])
    inputs, _ = router_inputs(model, keyed, rungs, need_answers=False)
    return inputs


def _two_rung_point(model: RouterModel) -> OperatingPoint:
    _, _, point = sub_ladder_parts(model, ["small", "large"])
    return point
