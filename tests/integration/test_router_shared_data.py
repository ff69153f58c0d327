"""The committed router artifact against the shared outcome tables (skipped when they are absent)."""

from __future__ import annotations

import pytest

from router.offline.outcomes import rows_hash
from router.offline.report import evaluate
from router.offline.tables import load_outcomes
from router.offline.train import rung_rows
from router.runtime.artifact import load_model
from tests.unit.router_support import LARGE, MID, SHARED_OUTCOMES, SMALL

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(
        not (SHARED_OUTCOMES / "train").is_dir(),
        reason="../shared/data/routing-outcomes is not present beside the repository",
    ),
]


def test_committed_artifact_was_trained_on_exactly_the_shared_train_split() -> None:
    # The artifact names the data as it saw it: re-keyed from its training models to rungs.
    meta = load_model().metadata
    rows, _ = rung_rows(load_outcomes([SHARED_OUTCOMES / "train"]), meta["training_models"])
    assert meta["training_data_sha256"] == rows_hash(rows)
    assert meta["training_rows"] == len(rows)


def test_committed_artifact_cascade_replays_on_the_train_routerbench_tables() -> None:
    files = sorted((SHARED_OUTCOMES / "train").glob("routerbench-*.jsonl"))
    summary = evaluate(load_model(), load_outcomes(files), SMALL, LARGE, MID).summary
    assert summary["cascade_rows"] == summary["rows"] > 1000
    assert 0.0 < summary["cascade_cost_ratio"] < 1.0
    assert summary["oracle_apgr"] > summary["apgr"] > 0.0
