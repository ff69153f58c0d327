"""Token logprobs: read from the outcome rows, learned by calibration, and used live exactly as judged.

Tiers return token logprobs live; the outcome tables carry none. A head fitted without them must
give them no weight (else the live verifier would not be the one calibration placed), and a head
re-fitted on a sample that records them must learn what they say.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from router.offline.calibrate import calibrate_model
from router.offline.cascade import best_mix_cost_ratio, simulate
from router.offline.outcomes import OutcomeRow, parse_row, to_rungs
from router.offline.report import router_inputs
from router.offline.train import rung_rows
from router.runtime.artifact import load_model, save_model
from router.runtime.operating_point import OperatingPoint
from router.runtime.verifier import Verifier
from tests.unit.router_support import LARGE, SMALL, fixture_model

ANSWER = "Let me think. The answer is (B)."


def _rows(n: int, seed: int, signal: bool = True) -> list[OutcomeRow]:
    """Two-model rows whose small answer is always the same text: only its logprobs say whether it is
    wrong (mean -2.0 when it is, -0.3 when not; both -1.0 without `signal`)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        fails = bool(rng.random() < 0.3)
        centre = (-2.0 if fails else -0.3) if signal else -1.0
        lps = tuple(float(x) for x in np.minimum(rng.normal(centre, 0.4, size=12), 0.0))
        rows.append(
            OutcomeRow(
                f"lp-{seed}-{signal}-{i}",
                "mine",
                f"Question {seed}-{i}: which option is right?\nA) one\nB) two",
                {SMALL: 0.0 if fails else 1.0, LARGE: 1.0},
                {SMALL: 1e-4, LARGE: 3e-3},
                {SMALL: ANSWER, LARGE: ANSWER},
                {SMALL: lps},
            )
        )
    return rows


def test_rows_read_finite_numbers_and_token_logprobs_per_model_and_keep_them_when_keyed_by_rung() -> None:
    row = parse_row(
        {
            "id": "x",
            "prompt": "p",
            "scores": {"a": 1.0, "b": 0.0},
            "responses": {"a": "yes"},
            "logprobs": {"a": [-0.1, -2, "junk", float("nan"), True], "b": "not a list", "c": []},
        }
    )
    assert row.logprobs == {"a": (-0.1, -2.0)}
    odd = parse_row({"id": "y", "scores": {"a": float("nan"), "b": 1.0}, "cost_usd": {"a": float("inf"), "b": 0.1}})
    assert odd.scores == {"b": 1.0} and odd.cost_usd == {"b": 0.1}
    [keyed] = to_rungs([row], {"a": "small", "b": "large"})
    assert keyed.logprobs == {"small": (-0.1, -2.0)}


@pytest.mark.parametrize("which", ["fixture", "shipped"])
def test_a_head_fitted_without_logprobs_gives_them_no_weight(which: str) -> None:
    model = fixture_model() if which == "fixture" else load_model()
    verifier = Verifier(model)
    prompt = "Which gas do plants absorb?\nA) oxygen\nB) carbon dioxide\nAnswer:"
    for rung in range(len(model.ladder) - 1):
        plain = verifier.verify(prompt, ANSWER, rung=rung, previous_answers=["B"] * rung)
        for lps in ([-0.01] * 10, [-6.0] * 10):
            seen = verifier.verify(prompt, ANSWER, lps, rung=rung, previous_answers=["B"] * rung)
            assert seen.p_not_good_enough == pytest.approx(plain.p_not_good_enough, abs=1e-9)


def test_calibration_learns_logprobs_and_the_live_verifier_decides_as_judged(tmp_path: Path) -> None:
    model, summary = calibrate_model(fixture_model(), _rows(400, 1), [SMALL, LARGE], 0.95, bootstrap=20)
    assert summary["verifier_heads"][0]["head"].startswith("refit")
    assert summary["policy"] == "router" and summary["decided_on"] == "agreement"
    save_model(model, tmp_path / "lp.skops")
    loaded = load_model(tmp_path / "lp.skops")
    fresh = _rows(600, 2)
    keyed, rungs = rung_rows(fresh, [SMALL, LARGE])
    inputs, _ = router_inputs(loaded, keyed, rungs)
    point = OperatingPoint(
        (loaded.operating_point.start_thresholds[0],),
        (loaded.operating_point.verify_thresholds[0],),
        loaded.operating_point.start_mix[:1] + loaded.operating_point.start_mix[-1:]
        if loaded.operating_point.mixes
        else (),
    )
    judged = simulate(inputs, point)
    mix = best_mix_cost_ratio(inputs.scores, inputs.cost_usd, judged.quality_ratio)
    assert mix is not None and judged.cost_ratio < 0.8 * mix
    # Live: the verifier reads the answer's logprobs and gives the priority the replay judged by.
    verifier = Verifier(loaded)
    live = [verifier.verify(r.prompt, r.responses["small"], r.logprobs["small"], rung=0) for r in keyed]
    assert [v.priority for v in live] == pytest.approx(list(inputs.verify[:, 0, 0]), rel=1e-9)
    failed = [r.scores["small"] < r.scores["large"] for r in keyed]
    assert roc_auc_score(failed, [v.p_not_good_enough for v in live]) > 0.9
    # Without logprobs the same answers look alike to it: the signal is theirs.
    blind = [verifier.verify(r.prompt, r.responses["small"], None, rung=0).p_not_good_enough for r in keyed]
    assert np.ptp(blind) < 0.05


@pytest.mark.parametrize("seed", [3, 4])
def test_logprobs_that_say_nothing_buy_no_router(seed: int) -> None:
    # A head re-fitted on noise may edge past the transferred one in cross-validation (0.52-0.57 here);
    # the calibration's signal and savings guards must still keep the fixed mix.
    _, summary = calibrate_model(fixture_model(), _rows(400, seed, signal=False), [SMALL, LARGE], 0.95, bootstrap=20)
    assert summary["policy"] == "fixed-mix"
