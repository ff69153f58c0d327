"""`tiergate router train | eval | calibrate` end to end on the in-repo fixture table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from deployments.profile import load_profile
from gateway.cli import app
from gateway.cli.router_cmd import EVAL_KEYS
from router.runtime.artifact import save_model
from tests.unit.router_support import FIXTURE, LARGE, MID, SMALL, fixture_model

runner = CliRunner()


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "router.skops"
    save_model(fixture_model(), path)
    return path


def _profile(tmp_path: Path) -> Path:
    tiers = [
        {"name": name, "endpoint": "http://127.0.0.1:9/v1", "upstream_model": name, "router_rung": rung}
        for name, rung in (("small", SMALL), ("medium", MID), ("large", LARGE))
    ]
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "tiers": tiers}), encoding="utf-8")
    return path


def _calibrate_args(profile: Path, model_path: Path) -> list[str]:
    return [
        "router",
        "calibrate",
        "--data",
        str(FIXTURE),
        "--profile",
        str(profile),
        "--model",
        str(model_path),
    ]


def test_train_writes_a_loadable_artifact_and_prints_metrics(tmp_path: Path) -> None:
    out = tmp_path / "trained.skops"
    result = runner.invoke(app, ["router", "train", "--data", str(FIXTURE), "--out", str(out), "--folds", "3"])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert out.with_suffix(".json").is_file()
    assert "cascade_out_of_fold" in result.stdout


def test_eval_json_prints_every_required_key_and_a_plot(tmp_path: Path, model_path: Path) -> None:
    plot = tmp_path / "curve.png"
    args = ["router", "eval", "--data", str(FIXTURE), "--small", SMALL, "--large", LARGE, "--mid", MID]
    result = runner.invoke(app, [*args, "--model", str(model_path), "--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data)[: len(EVAL_KEYS)] == list(EVAL_KEYS)
    assert 0.0 <= data["cascade_quality_ratio"] <= 1.5
    assert data["cascade_cost_ratio"] > 0
    assert data["oracle_apgr"] > data["random_apgr"] == 0.5
    assert set(data["per_benchmark"]) == {"synthetic-mc", "synthetic-code", "synthetic-open"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_accepts_the_routellm_spelling_of_mixtral(model_path: Path) -> None:
    args = ["router", "eval", "--data", str(FIXTURE), "--small", SMALL, "--large", LARGE, "--json"]
    result = runner.invoke(app, [*args, "--mid", "mistralai/Mixtral-8x7B-Instruct-v0.1", "--model", str(model_path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cascade_quality_ratio"] is not None


def test_eval_refuses_a_missing_artifact_with_a_clear_error(tmp_path: Path) -> None:
    args = ["router", "eval", "--data", str(FIXTURE), "--small", SMALL, "--large", LARGE]
    result = runner.invoke(app, [*args, "--model", str(tmp_path / "none.skops")])
    assert result.exit_code == 2
    assert "no router artifact" in result.output


def test_calibrate_writes_learned_policy_and_ascending_thresholds(tmp_path: Path, model_path: Path) -> None:
    profile = _profile(tmp_path)
    args = _calibrate_args(profile, model_path)
    result = runner.invoke(app, [*args, "--target-large-share", "0.4"])
    assert result.exit_code == 0, result.output
    routing = load_profile(str(profile)).routing
    assert routing.policy == "learned"
    assert routing.scorer_artifact == str(model_path)
    assert routing.thresholds is not None
    assert len(routing.thresholds) == 2
    assert routing.thresholds == sorted(routing.thresholds)


def test_calibrate_to_a_higher_quality_never_lowers_the_large_share(tmp_path: Path, model_path: Path) -> None:
    profile = _profile(tmp_path)
    base = _calibrate_args(profile, model_path)
    thresholds = []
    for target in ("0.8", "0.95"):
        result = runner.invoke(app, [*base, "--target-quality", target])
        assert result.exit_code == 0, result.output
        routing = load_profile(str(profile)).routing
        assert routing.thresholds is not None
        thresholds.append(routing.thresholds[0])
    # A stricter quality target can only lower the shared threshold (more traffic climbs).
    assert thresholds[1] <= thresholds[0]


def test_calibrate_needs_exactly_one_target(tmp_path: Path, model_path: Path) -> None:
    profile = _profile(tmp_path)
    args = _calibrate_args(profile, model_path)
    assert runner.invoke(app, args).exit_code == 2


def test_calibrate_out_takes_a_two_rung_ladder_with_mid_none(tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "two.skops"
    base = ["router", "calibrate", "--data", str(FIXTURE), "--model", str(model_path), "--small", SMALL]
    result = runner.invoke(
        app,
        [*base, "--mid", "none", "--large", LARGE, "--target-quality", "0.9", "--out", str(out), "--bootstrap", "5"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.with_suffix(".json").read_text())["calibration"]["rungs"] == ["small", "large"]
    # Naming one model on two rungs is refused with the way out, not a calibration on zero rows.
    twice = runner.invoke(app, [*base, "--mid", SMALL, "--large", LARGE, "--target-quality", "0.9", "--out", str(out)])
    assert twice.exit_code == 2
    assert "--mid none" in twice.output
