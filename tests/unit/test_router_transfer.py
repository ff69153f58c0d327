"""Transfer to unseen traffic: final answers anywhere, rungs not models, mixes, calibration on a sample."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gateway.cli import app
from router.offline.calibrate import MIN_FAILURES, calibrate_point
from router.offline.cascade import (
    ALWAYS,
    NEVER,
    CascadeInputs,
    best_mix_cost_ratio,
    cheapest_mix,
    choose_agreement_point,
    choose_operating_point,
    simulate,
)
from router.offline.costs import fill_costs, price_by_tokens
from router.offline.outcomes import OutcomeRow, to_rungs
from router.offline.report import evaluate
from router.runtime.answer_features import ANSWER_FEATURE_NAMES, answer_features, extract_letter, final_answer
from router.runtime.artifact import load_model, save_model
from router.runtime.model import LearnedScorer, RouterModel
from router.runtime.operating_point import OperatingPoint, cumulative_shares
from router.runtime.policy import PolicyConfig, RoutingRequest, decide
from tests.unit.router_support import FIXTURE, LARGE, MID, SHARED_OUTCOMES, SMALL, fixture_model, fixture_rows

runner = CliRunner()


def test_option_letters_are_found_wherever_the_answer_states_them() -> None:
    assert extract_letter("Let me think. Energy is conserved, so the answer is (C).") == "C"
    assert extract_letter("Both options look close.\nAfter weighing them:\nAnswer: B") == "B"
    assert extract_letter("Working...\n\nFinal: \\boxed{D}") == "D"
    assert extract_letter("Reasoning about it at length.\n(A)") == "A"
    assert extract_letter("A dog is an animal with four legs.") is None
    # Chat models' markdown, and options past D (ten-option sets run to J).
    assert extract_letter("Step by step: ...\nThe correct choice is **C**.") == "C"
    assert extract_letter("**Answer:** H") == "H"
    assert extract_letter("The correct answer is: **(J) none of these**") == "J"
    # A lower-case word after "answer is" is not an option.
    assert extract_letter("I think the answer is a dog.") is None


def test_final_numbers_agree_however_they_are_written() -> None:
    assert final_answer("so 12 * 3 = 36 in total\n#### 36") == final_answer("The answer is 36.0")
    assert final_answer("\\boxed{1,250}") == final_answer("Total: 1250")
    assert final_answer("so \\boxed{\\frac{3}{4}}") == final_answer("The answer is 3/4") == final_answer("0.75")
    # A fraction in passing is not the answer: the last number is.
    assert final_answer("She used 1/3 pound and paid 3 dollars for 1/3 pound") == final_answer("3")
    assert final_answer("```python\ndef f(x):\n    return x\n```") == final_answer("```\ndef f(x):\n  return x```")


def test_prose_answers_that_say_the_same_thing_are_more_similar_than_unrelated_ones() -> None:
    names = list(ANSWER_FEATURE_NAMES)
    mine = "Paris is the capital of France and its largest city."
    same = dict(zip(names, answer_features(mine, ["The capital of France is Paris, its largest city."]), strict=True))
    other = dict(zip(names, answer_features(mine, ["Photosynthesis turns light into chemical energy."]), strict=True))
    assert same["prev_text_similarity"] > 0.6 > 0.2 > other["prev_text_similarity"]
    assert same["ans_is_prose"] == 1.0


def test_refusals_and_hedges_are_flagged() -> None:
    names = list(ANSWER_FEATURE_NAMES)
    refused = dict(zip(names, answer_features("I'm sorry, but I cannot provide that."), strict=True))
    plain = dict(zip(names, answer_features("Water boils at 100 degrees Celsius at sea level."), strict=True))
    assert refused["ans_refusal"] == 1.0 and refused["ans_hedges"] >= 1.0
    assert plain["ans_refusal"] == 0.0 and plain["ans_hedges"] == 0.0


def test_the_cheapest_mix_lies_on_the_lower_hull() -> None:
    found = cheapest_mix([0.6, 0.9, 1.0], [0.02, 0.06, 1.0], 0.95)
    assert found is not None
    shares, quality, cost = found
    assert shares == pytest.approx((0.0, 0.5, 0.5))
    assert quality == pytest.approx(0.95)
    assert cost == pytest.approx(0.53)
    assert cheapest_mix([0.6, 0.9], [0.1, 1.0], 1.01) is None


def _inputs(rng: np.random.Generator, n: int, signal: float) -> CascadeInputs:
    """Three rungs; the verifier's priority is `signal` x (rung wrong) + noise."""
    scores = np.column_stack(
        [rng.random(n) < 0.55, rng.random(n) < 0.8, rng.random(n) < 0.95],
    ).astype(np.float64)
    cost = np.column_stack([np.full(n, 0.02), np.full(n, 0.06), np.full(n, 1.0)])
    verify = np.full((n, 3, 2), np.nan)
    for k in range(2):
        wrong = (scores[:, k] < scores[:, 2]).astype(np.float64)
        for s in range(k + 1):
            verify[:, s, k] = signal * wrong + rng.random(n)
    return CascadeInputs(scores, cost, rng.random((n, 2)), verify)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=0.0, max_value=2.0))
def test_the_chosen_point_never_costs_more_than_the_best_fixed_mix_it_could_be(seed: int, signal: float) -> None:
    inputs = _inputs(np.random.default_rng(seed), 120, signal)
    _, result = choose_operating_point(inputs, 0.9, steps=5)
    assert result.quality_ratio >= 0.9 - 1e-9
    # Every two-rung fixed mix in the search's 5% steps that reaches the target costs at least as much.
    never = tuple([NEVER, NEVER])
    for a, b in itertools.combinations(range(3), 2):
        for w in np.linspace(0.0, 1.0, 21):
            mix = [0.0, 0.0, 0.0]
            mix[a], mix[b] = 1.0 - float(w), float(w)
            shares = tuple(mix)
            fixed = simulate(inputs, OperatingPoint(cumulative_shares(shares), never, shares))
            if fixed.quality_ratio >= 0.9 + 1e-9:
                assert result.cost_ratio <= fixed.cost_ratio + 1e-9


def test_a_start_mix_is_replayed_as_the_share_weighted_sum_of_its_starts() -> None:
    inputs = _inputs(np.random.default_rng(3), 200, 1.0)
    taus = (0.8, 0.9)
    mix = (0.2, 0.5, 0.3)
    whole = simulate(inputs, OperatingPoint(cumulative_shares(mix), taus, mix))
    parts = [
        simulate(inputs, OperatingPoint(cumulative_shares(one), taus, one))
        for one in ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    ]
    assert whole.quality == pytest.approx(sum(w * p.quality for w, p in zip(mix, parts, strict=True)))
    assert whole.cost_usd == pytest.approx(sum(w * p.cost_usd for w, p in zip(mix, parts, strict=True)))


def _with_point(model: RouterModel, point: OperatingPoint) -> RouterModel:
    return RouterModel(
        model.ladder, model.scorers, model.verifiers, point, model.cost_model, model.cost_reference_log_usd
    )


def test_the_live_policy_runs_a_start_mix_from_the_artifact() -> None:
    mix = (0.0, 0.7, 0.3)
    model = _with_point(fixture_model(), OperatingPoint(cumulative_shares(mix), (NEVER, NEVER), mix))
    config = PolicyConfig(tier_names=("s", "m", "l"), thresholds=cumulative_shares(mix))
    scorer = LearnedScorer(model)
    tiers = [decide(RoutingRequest(text=f"question number {i}?"), config, scorer).tier for i in range(3000)]
    assert tiers.count("s") == 0
    assert tiers.count("m") / len(tiers) == pytest.approx(0.7, abs=0.03)
    # The same prompt always starts at the same rung (replay and retries agree).
    assert {decide(RoutingRequest(text="same"), config, scorer).tier for _ in range(5)} != set()
    assert len({decide(RoutingRequest(text="same"), config, scorer).tier for _ in range(5)}) == 1


def test_calibration_keeps_a_router_that_knows_and_falls_back_to_the_mix_when_it_does_not() -> None:
    rng = np.random.default_rng(11)
    knows = calibrate_point(_inputs(rng, 300, 5.0), 0.95, bootstrap=20)
    blind = calibrate_point(_inputs(rng, 300, 0.0), 0.95, bootstrap=20)
    assert knows.summary["policy"] == "router"
    assert knows.summary["cost_vs_best_mix"] < 0.8
    assert blind.summary["policy"] == "fixed-mix"
    assert blind.point.verify_thresholds == (NEVER, NEVER)
    lo, hi = blind.summary["bootstrap"]["quality_ratio_90"]
    assert lo <= blind.summary["quality_ratio"] <= hi


def test_the_calibrated_cascade_asks_every_cheaper_rung_and_decides_once_at_the_last() -> None:
    point, result = choose_agreement_point(_inputs(np.random.default_rng(5), 300, 5.0), 0.95)
    # Rung 0 always climbs; only the last rung below the top has a threshold to cross.
    assert point.verify_thresholds[0] == ALWAYS
    assert point.verify_thresholds[1] not in (ALWAYS, NEVER)
    # Requests start at rung 0 or at the top, never in the middle.
    assert point.start_mix[1] == 0.0
    assert point.start_mix[0] + point.start_mix[2] == pytest.approx(1.0)
    assert result.quality_ratio >= 0.95 - 1e-9


def _fresh_ratio(point: OperatingPoint, fresh: CascadeInputs) -> float:
    judged = simulate(fresh, point)
    mix = best_mix_cost_ratio(fresh.scores, fresh.cost_usd, judged.quality_ratio)
    assert mix is not None
    return judged.cost_ratio / mix


def test_calibration_on_small_samples_keeps_a_real_signal_and_does_not_take_noise_for_one() -> None:
    # Twelve operators, each with a 200-row sample and 2,000 rows of later traffic from the same source.
    kept, taken_blind, fresh_kept, fresh_blind = 0, 0, [], []
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        knows = calibrate_point(_inputs(rng, 200, 1.5), 0.95, bootstrap=0, seed=seed)
        kept += knows.summary["policy"] == "router"
        fresh_kept.append(_fresh_ratio(knows.point, _inputs(rng, 2000, 1.5)))
        blind = calibrate_point(_inputs(rng, 200, 0.0), 0.95, bootstrap=0, seed=seed)
        taken_blind += blind.summary["policy"] == "router"
        fresh_blind.append(_fresh_ratio(blind.point, _inputs(rng, 2000, 0.0)))
    assert kept >= 11
    assert float(np.median(fresh_kept)) < 0.8
    # Without a signal the cost gain a search finds on 200 rows is noise (the signal check refuses
    # it; without the check one sample in twelve kept a router that cost 1.3x the mix on new rows).
    assert taken_blind == 0
    assert max(fresh_blind) <= 1.0 + 1e-9


def test_a_sample_with_too_few_failures_to_judge_keeps_the_mix_however_clear_the_signal() -> None:
    inputs = _inputs(np.random.default_rng(21), 40, 5.0)
    chosen = calibrate_point(inputs, 0.95, bootstrap=0)
    agreement = chosen.summary["candidates"]["agreement"]
    assert agreement["failures"] < MIN_FAILURES
    assert agreement["signal_auc_low"] > 0.5
    assert chosen.summary["policy"] == "fixed-mix"
    # The same signal with enough failures in the sample is kept.
    assert (
        calibrate_point(_inputs(np.random.default_rng(21), 300, 5.0), 0.95, bootstrap=0).summary["policy"] == "router"
    )


def _renamed(rows: tuple[OutcomeRow, ...], names: dict[str, str]) -> list[OutcomeRow]:
    return [
        OutcomeRow(
            r.id,
            r.benchmark,
            r.prompt,
            {names[m]: v for m, v in r.scores.items()},
            {names[m]: v for m, v in r.cost_usd.items()},
            {names[m]: v for m, v in r.responses.items()},
        )
        for r in rows
    ]


def test_eval_judges_any_ladder_of_models_the_same_way() -> None:
    names = {SMALL: "acme/tiny", MID: "acme/medium", LARGE: "acme/huge"}
    model = fixture_model()
    theirs = evaluate(model, _renamed(fixture_rows(), names), "acme/tiny", "acme/huge", "acme/medium").summary
    ours = evaluate(model, list(fixture_rows()), SMALL, LARGE, MID).summary
    for key in ("apgr", "cascade_quality_ratio", "cascade_cost_ratio", "best_mix_cost_ratio", "cost_vs_best_mix"):
        assert theirs[key] == ours[key]
    assert theirs["best_mix_cost_ratio"] is not None
    assert theirs["cost_vs_best_mix"] == pytest.approx(
        theirs["cascade_cost_ratio"] / theirs["best_mix_cost_ratio"], abs=1e-3
    )


def test_rows_without_prices_are_priced_from_the_rows_with_them() -> None:
    priced = [
        OutcomeRow(f"p{i}", "b", "x" * (10 * i), {"m": 1.0}, {"m": 1e-6 * (10 * i + 2 * 40)}, {"m": "y" * 40})
        for i in range(1, 30)
    ]
    unpriced = OutcomeRow("u", "b", "x" * 100, {"m": 1.0}, {}, {"m": "y" * 40})
    filled = fill_costs([unpriced], priced)[0]
    assert filled.cost_usd["m"] == pytest.approx(1e-6 * (100 + 80), rel=0.05)
    assert to_rungs([unpriced], {"m": "small"})[0].scores == {"small": 1.0}


def test_calibrate_writes_an_artifact_with_its_interval_that_eval_judges(tmp_path: Path) -> None:
    base = tmp_path / "base.skops"
    save_model(fixture_model(), base)
    out = tmp_path / "calibrated.skops"
    args = ["router", "calibrate", "--data", str(FIXTURE), "--target-quality", "0.9", "--out", str(out)]
    result = runner.invoke(app, [*args, "--artifact", str(base), "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["policy"] in {"router", "fixed-mix"}
    assert len(summary["bootstrap"]["cost_ratio_90"]) == 2
    # One entry per rung but the top, with the head each kept (transferred or re-fitted on DATA).
    assert [h["rung"] for h in summary["verifier_heads"]] == [0, 1]
    calibrated = load_model(out)
    assert calibrated.metadata["calibration"]["rows"] == summary["rows"]
    assert calibrated.version != fixture_model().version
    judged = runner.invoke(
        app, ["router", "eval", "--data", str(FIXTURE), "--artifact", str(out), "--mid", MID, "--json"]
    )
    assert judged.exit_code == 0, judged.output
    assert json.loads(judged.stdout)["cost_vs_best_mix"] is not None


def test_calibrate_names_the_models_the_data_has_when_a_rung_is_missing(tmp_path: Path) -> None:
    args = ["router", "calibrate", "--data", str(FIXTURE), "--target-quality", "0.9", "--out", str(tmp_path / "x")]
    result = runner.invoke(app, [*args, "--large", "acme/huge"])
    assert result.exit_code == 2
    assert "acme/huge" in result.output and LARGE in result.output


@pytest.mark.skipif(not SHARED_OUTCOMES.is_dir(), reason="the shared routing-outcome tables are not here")
def test_final_answers_are_found_in_nearly_every_recorded_answer() -> None:
    from router.offline.tables import load_outcomes

    rows = load_outcomes([SHARED_OUTCOMES / "train" / "routerbench-arc-challenge-train.jsonl"])[:300]
    letters = [final_answer(r.responses["mistralai/mixtral-8x7b-chat"]).startswith("letter:") for r in rows]
    assert sum(letters) / len(letters) >= 0.95


def test_lobo_reports_each_held_out_benchmark_against_the_mix(tmp_path: Path) -> None:
    out = tmp_path / "lobo.json"
    args = ["router", "lobo", "--data", str(FIXTURE), "--benchmark", "synthetic-mc", "--json-out", str(out)]
    result = runner.invoke(app, [*args, "--cache", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    fold = json.loads(out.read_text())["synthetic-mc"]
    assert fold["rows_calibration"] + fold["rows_judged"] == 60
    assert fold["oracle_cost_ratio"] <= fold["cost_ratio"]
    assert "| synthetic-mc | 3 |" in result.stdout
    assert list((tmp_path / "cache").glob("features-*.json"))


def test_the_gateway_loads_a_calibrated_mix_as_start_thresholds_and_a_judge_that_never_climbs(tmp_path: Path) -> None:
    from deployments.profile import parse_profile
    from gateway.state import load_router

    mix = (0.0, 0.6, 0.4)
    path = tmp_path / "mix.skops"
    save_model(_with_point(fixture_model(), OperatingPoint(cumulative_shares(mix), (NEVER, NEVER), mix)), path)
    tiers = [
        {"name": name, "endpoint": "http://127.0.0.1:9/v1", "upstream_model": name, "router_rung": rung}
        for name, rung in (("s", "small"), ("m", "mid"), ("l", "large"))
    ]
    routing = {"policy": "learned", "scorer_artifact": str(path), "cascade": {"enabled": True}}
    parts = load_router(parse_profile({"name": "t", "tiers": tiers, "routing": routing}))
    assert parts.start_thresholds == pytest.approx(cumulative_shares(mix))
    assert parts.judge is not None
    doubtful = parts.judge.judge("m", "Which?\nA) x\nB) y", "I am not sure, maybe A or B", None, ["B"])
    assert not doubtful.escalate


def test_lobo_on_a_table_without_prices_names_the_fix_and_prices_it_when_told(tmp_path: Path) -> None:
    table = tmp_path / "unpriced.jsonl"
    lines = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    for row in lines:
        row.pop("cost_usd", None)  # no table prices anything: nothing to estimate costs from
    table.write_text("".join(json.dumps(r) + "\n" for r in lines))
    args = ["router", "lobo", "--data", str(table), "--benchmark", "synthetic-mc"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2
    assert "synthetic-mc: " in refused.output and "--price" in refused.output
    prices = [f"--price={m}={usd}" for m, usd in ((SMALL, 0.2), (MID, 0.6), (LARGE, 10.0))]
    out = tmp_path / "lobo.json"
    priced = runner.invoke(app, [*args, *prices, "--json-out", str(out)])
    assert priced.exit_code == 0, priced.output
    assert json.loads(out.read_text())["synthetic-mc"]["rows_calibration"] > 0
    bad = runner.invoke(app, [*args, "--price", f"{SMALL}=free"])
    assert bad.exit_code == 2 and "MODEL=USD_PER_MILLION_TOKENS" in bad.output


def test_a_price_per_million_tokens_fills_only_missing_costs() -> None:
    recorded = OutcomeRow("a", "b", "x" * 400, {SMALL: 1.0, LARGE: 1.0}, {LARGE: 0.5}, {SMALL: "y" * 400})
    unanswered = OutcomeRow("c", "b", "x" * 400, {SMALL: 1.0}, {}, {})
    first, second = price_by_tokens([recorded, unanswered], {SMALL: 2.0, LARGE: 100.0})
    assert first.cost_usd[LARGE] == 0.5  # recorded: kept
    assert first.cost_usd[SMALL] == pytest.approx(200 * 2.0 / 1e6)  # (400 + 400 characters) / 4 tokens
    assert second.cost_usd[SMALL] == pytest.approx(first.cost_usd[SMALL])  # the median answer length
    assert LARGE not in second.cost_usd  # no score for it: nothing to price


def test_lobo_skips_a_benchmark_too_small_to_judge_and_runs_the_others(tmp_path: Path) -> None:
    table = tmp_path / "with-tiny.jsonl"
    lines = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    tiny = [dict(row, id=f"tiny-{i}", benchmark="tiny") for i, row in enumerate(lines[:6])]
    table.write_text("".join(json.dumps(r) + "\n" for r in lines + tiny))
    args = ["router", "lobo", "--data", str(table), "--benchmark", "synthetic-mc", "--benchmark", "tiny"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| tiny | | | skipped: 6 rows" in result.stdout
    assert "| synthetic-mc | 3 |" in result.stdout
