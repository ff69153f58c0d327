"""APGR / CPT sweep, cascade replay and threshold calibration on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.offline.calibrate import routed_tier, threshold_for_large_share, threshold_for_quality
from router.offline.cascade import CascadeInputs, choose_operating_point, simulate
from router.offline.metrics import apgr, cpt, oracle_score, random_apgr, sweep
from router.runtime.operating_point import OperatingPoint

SMALL = [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
LARGE = [1.0, 1.0, 1.0, 1.0, 0.0, 1.0]


def test_oracle_beats_random_and_a_reversed_router_loses_to_it() -> None:
    oracle = apgr(sweep(SMALL, LARGE, oracle_score(SMALL, LARGE)))
    reversed_router = apgr(sweep(SMALL, LARGE, -oracle_score(SMALL, LARGE)))
    assert oracle > random_apgr(SMALL, LARGE) == 0.5 > reversed_router


def test_expected_apgr_of_random_scores_is_one_half() -> None:
    rng = np.random.default_rng(3)
    small = rng.integers(0, 2, 200).astype(float)
    large = np.maximum(small, rng.integers(0, 2, 200)).astype(float)
    values = [apgr(sweep(small, large, rng.random(200))) for _ in range(300)]
    assert abs(float(np.mean(values)) - 0.5) < 0.02


def test_cpt_is_the_first_share_reaching_the_gap_fraction() -> None:
    curve = sweep(SMALL, LARGE, oracle_score(SMALL, LARGE))
    # 3 of 6 requests gain; the oracle sends them first: half the gap needs 2 of 6 (1.5 rounds up).
    assert cpt(curve, 0.5) == pytest.approx(2 / 6)
    assert cpt(curve, 1.0) == pytest.approx(3 / 6)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 1.0]), st.sampled_from([0.0, 1.0]), st.floats(0, 1)), min_size=2))
def test_cpt_grows_with_the_fraction_and_curve_ends_at_large(rows: list[tuple[float, float, float]]) -> None:
    s, lg, score = (list(x) for x in zip(*rows, strict=True))
    curve = sweep(s, lg, score)
    assert curve.quality[-1] == pytest.approx(np.mean(lg))
    assert curve.quality[0] == pytest.approx(np.mean(s))
    assert cpt(curve, 0.3) <= cpt(curve, 0.6) <= cpt(curve, 0.9)


def _inputs() -> CascadeInputs:
    scores = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    cost = np.tile([1.0, 3.0, 50.0], (4, 1))
    start = np.full((4, 2), 0.5)
    verify = np.full((4, 3, 2), np.nan)
    verify[:, 0, 0] = [0.1, 0.9, 0.9, 0.1]
    verify[:, 0, 1] = [0.1, 0.1, 0.9, 0.1]
    verify[:, 1, 1] = verify[:, 0, 1]
    return CascadeInputs(scores, cost, start, verify)


def test_cascade_pays_for_every_rung_it_calls() -> None:
    inputs = _inputs()
    always_top = simulate(inputs, OperatingPoint((2.0, 2.0), (-1.0, -1.0)))
    assert always_top.served_share == (0.0, 0.0, 1.0)
    assert always_top.cost_ratio == pytest.approx((1 + 3 + 50) / 50)
    never_climb = simulate(inputs, OperatingPoint((2.0, 2.0), (2.0, 2.0)))
    assert never_climb.served_share == (1.0, 0.0, 0.0)
    assert never_climb.cost_ratio == pytest.approx(1 / 50)


def test_cascade_climbs_only_where_the_verifier_doubts() -> None:
    result = simulate(_inputs(), OperatingPoint((2.0, 2.0), (0.5, 0.5)))
    # Rows 1 and 2 doubt rung 0; only row 2 doubts rung 1: every row ends with a correct answer.
    assert result.served_share == (0.5, 0.25, 0.25)
    assert result.quality == 1.0


def test_operating_point_meets_the_quality_target_within_the_cost_cap() -> None:
    point, result = choose_operating_point(_inputs(), target_quality_ratio=1.0, max_cost_ratio=0.5)
    assert result.quality_ratio >= 1.0
    assert result.cost_ratio <= 0.5
    assert simulate(_inputs(), point) == result


def test_large_share_calibration_hits_the_target() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((1000, 2))
    t = threshold_for_large_share(scores, 0.3)
    assert abs(float((routed_tier(scores, t) == 2).mean()) - 0.3) < 0.01


def test_quality_calibration_returns_the_cheapest_threshold_reaching_the_target() -> None:
    scores = np.array([[0.1], [0.9], [0.2], [0.8]])
    quality = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    t = threshold_for_quality(scores, quality, 1.0)
    assert routed_tier(scores, t).tolist() == [0, 1, 0, 1]
