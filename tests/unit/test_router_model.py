"""The trained router: scorer, verifier, policy integration and the skops artifact."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import skops.io as sio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.tree import DecisionTreeClassifier

from router.offline.outcomes import rows_hash
from router.offline.train import rung_rows
from router.runtime.artifact import (
    DEFAULT_ARTIFACT,
    ArtifactError,
    load_model,
    metadata_path,
    resolve_artifact,
    save_model,
)
from router.runtime.model import ARTIFACT_FORMAT_VERSION, ARTIFACT_KIND, RUNG_NAMES, LearnedScorer
from router.runtime.policy import PolicyConfig, RoutingRequest, Scorer, decide
from router.runtime.verifier import Verifier
from tests.unit.router_support import LARGE, MID, SMALL, fixture_model, fixture_rows

ODD = ["", "日本語で答えてください。", "def f():\n    return 1;\n" * 400, "x" * 40_000, "\ufffd\x00"]


def test_trained_model_records_version_data_hash_metrics_and_operating_point() -> None:
    model = fixture_model()
    # Rungs, not models: the table's model keys are recorded for provenance only.
    assert model.ladder == RUNG_NAMES
    assert model.metadata["training_models"] == [SMALL, MID, LARGE]
    assert model.metadata["training_data_sha256"] == rows_hash(rung_rows(list(fixture_rows()), [SMALL, MID, LARGE])[0])
    assert model.version.startswith(f"scorer-v{ARTIFACT_FORMAT_VERSION}-")
    assert "cascade_out_of_fold" in model.metadata["metrics"]
    assert len(model.operating_point.verify_thresholds) == 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=2000), st.integers(min_value=0, max_value=6))
def test_scores_are_probabilities_one_per_rung_for_any_text(text: str, n_rungs: int) -> None:
    scores = LearnedScorer(fixture_model()).scores(RoutingRequest(text=text), n_rungs)
    assert len(scores) == n_rungs
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_scorer_never_raises_on_empty_huge_non_english_or_code_prompts() -> None:
    scorer = LearnedScorer(fixture_model())
    for text in ODD:
        assert all(0.0 <= s <= 1.0 for s in scorer.scores(RoutingRequest(text=text), 2))


def test_profile_tiers_map_onto_rungs_and_the_top_rung_scores_zero() -> None:
    model = fixture_model()
    scorer = LearnedScorer(model, [MID, LARGE])
    full = LearnedScorer(model).scores(RoutingRequest(text="Write a function to add."), 2)
    assert scorer.scores(RoutingRequest(text="Write a function to add."), 2) == [full[1], 0.0]
    with pytest.raises(KeyError, match="not in the model's ladder"):
        LearnedScorer(model, ["some/other-model"])


class _Fixed:
    """A scorer returning one chosen score for every rung (to probe the policy)."""

    version = "fixed"

    def __init__(self, score: float) -> None:
        self.score = score

    def scores(self, request: RoutingRequest, n_rungs: int) -> list[float]:
        return [self.score] * n_rungs


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1), st.lists(st.floats(0, 1), min_size=2, max_size=2))
def test_a_higher_score_never_picks_a_cheaper_tier(a: float, b: float, raw: list[float]) -> None:
    config = PolicyConfig(tier_names=("small", "medium", "large"), thresholds=tuple(sorted(raw)))
    request = RoutingRequest(text="hi")
    low, high = sorted((a, b))
    assert decide(request, config, _Fixed(low)).tier_index <= decide(request, config, _Fixed(high)).tier_index


def test_learned_scorer_drives_the_policy() -> None:
    scorer = LearnedScorer(fixture_model())
    config = PolicyConfig(tier_names=("small", "medium", "large"), thresholds=(0.0, 0.0))
    assert decide(RoutingRequest(text="Which?\nA) x\nB) y"), config, scorer).tier == "large"
    config = PolicyConfig(tier_names=("small", "medium", "large"), thresholds=(1.01, 1.01))
    assert decide(RoutingRequest(text="Which?\nA) x\nB) y"), config, scorer).tier == "small"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(max_size=1000),
    st.text(max_size=1000),
    st.none() | st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=20),
    st.integers(-1, 4),
)
def test_verdicts_are_probabilities_for_any_answer(
    prompt: str, answer: str, logprobs: list[float] | None, rung: int
) -> None:
    verdict = Verifier(fixture_model()).verify(prompt, answer, logprobs, rung=rung, previous_answers=[answer])
    assert 0.0 <= verdict.p_not_good_enough <= 1.0
    assert verdict.escalate == (verdict.priority > verdict.threshold)


def test_top_rung_answers_are_never_escalated() -> None:
    verdict = Verifier(fixture_model()).verify("Q", "A", rung=2)
    assert not verdict.escalate
    assert verdict.reason == "top-rung"


def test_artifact_round_trips_with_a_json_sidecar(tmp_path: Path) -> None:
    model = fixture_model()
    path = tmp_path / "router.skops"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.version == model.version
    assert loaded.operating_point == model.operating_point
    request = RoutingRequest(text="Write a function to reverse a list.")
    assert LearnedScorer(loaded).scores(request, 2) == LearnedScorer(model).scores(request, 2)
    sidecar = json.loads(metadata_path(path).read_text())
    assert sidecar["version"] == model.version
    assert sidecar["training_data_sha256"]


def test_loading_refuses_another_format_version(tmp_path: Path) -> None:
    path = tmp_path / "old.skops"
    sio.dump({"kind": ARTIFACT_KIND, "format_version": ARTIFACT_FORMAT_VERSION + 1}, path)
    with pytest.raises(ArtifactError, match="format version"):
        load_model(path)


def test_loading_refuses_types_outside_the_trusted_list(tmp_path: Path) -> None:
    path = tmp_path / "foreign.skops"
    sio.dump(
        {"kind": ARTIFACT_KIND, "format_version": ARTIFACT_FORMAT_VERSION, "x": DecisionTreeClassifier()},
        path,
    )
    with pytest.raises(ArtifactError, match="untrusted"):
        load_model(path)


def test_loading_refuses_a_file_that_is_not_skops(tmp_path: Path) -> None:
    path = tmp_path / "junk.skops"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "not a model")
    with pytest.raises(ArtifactError):
        load_model(path)


def test_committed_default_artifact_loads_and_matches_its_sidecar() -> None:
    model = load_model()
    sidecar = json.loads(metadata_path(DEFAULT_ARTIFACT).read_text())
    assert sidecar["version"] == model.version
    assert sidecar["training_data_sha256"] == model.metadata["training_data_sha256"]
    assert tuple(sidecar["ladder"]) == model.ladder == RUNG_NAMES
    assert 0.0 <= LearnedScorer(model).scores(RoutingRequest(text="What is 2+2?"), 2)[0] <= 1.0


def test_profile_artifact_default_resolves_to_the_shipped_file() -> None:
    assert resolve_artifact(None) == resolve_artifact("default") == DEFAULT_ARTIFACT
    assert resolve_artifact("/models/r.skops") == Path("/models/r.skops")


def test_verifier_never_raises_on_empty_huge_non_english_or_code_answers() -> None:
    verifier = Verifier(fixture_model())
    for text in ODD:
        for rung in (0, 1):
            verdict = verifier.verify(text, text, [-0.5] * 3, rung=rung, previous_answers=[text])
            assert 0.0 <= verdict.p_not_good_enough <= 1.0


def test_learned_scorer_satisfies_the_policy_scorer_protocol() -> None:
    scorer: Scorer = LearnedScorer(fixture_model())
    assert scorer.version == fixture_model().version
