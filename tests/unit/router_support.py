"""Shared helpers for the router tests: the in-repo fixture table and one model trained on it."""

from __future__ import annotations

import functools
from pathlib import Path

from router.offline.outcomes import OutcomeRow
from router.offline.tables import load_outcomes
from router.offline.train import train_router
from router.runtime.model import RouterModel

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "outcomes-small.jsonl"
SHARED_OUTCOMES = REPO_ROOT.parent / "shared" / "data" / "routing-outcomes"
SMALL, MID, LARGE = "mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview"


@functools.cache
def fixture_rows() -> tuple[OutcomeRow, ...]:
    return tuple(load_outcomes([FIXTURE]))


@functools.cache
def fixture_model() -> RouterModel:
    """Trained once per test session on the synthetic table (about ten seconds)."""
    return train_router(list(fixture_rows()), folds=3)
