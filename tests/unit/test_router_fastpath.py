"""The numpy fast path gives the same numbers as scikit-learn's own predict."""

from __future__ import annotations

import numpy as np
import pytest

from router.offline.fit import FeatureCache, verifier_rows
from router.offline.train import rung_rows
from router.runtime.fastpath import compile_proba, compile_regressor
from router.runtime.model import positive_proba
from tests.unit.router_support import LARGE, MID, SMALL, fixture_model, fixture_rows


def test_every_fitted_part_compiles() -> None:
    model = fixture_model()
    assert all(compile_proba(e) is not None for e in (*model.scorers, *model.verifiers))
    assert compile_regressor(model.cost_model) is not None


def test_scorer_fast_path_matches_predict_proba_on_every_row() -> None:
    model = fixture_model()
    x = FeatureCache(list(fixture_rows())).prompt
    for estimator in model.scorers:
        fast = compile_proba(estimator)
        assert fast is not None
        assert [fast(row) for row in x] == pytest.approx(positive_proba(estimator, x).tolist(), abs=1e-9)


def test_verifier_and_cost_fast_paths_match_sklearn() -> None:
    model = fixture_model()
    for k, estimator in enumerate(model.verifiers):
        keyed, _ = rung_rows(list(fixture_rows()), [SMALL, MID, LARGE])
        x = np.asarray([vec for row in keyed for _, vec in verifier_rows(row, model.ladder, k)])
        assert len(x) > 0
        fast = compile_proba(estimator)
        assert fast is not None
        assert [fast(row) for row in x] == pytest.approx(positive_proba(estimator, x).tolist(), abs=1e-9)
    x = FeatureCache(list(fixture_rows())).prompt
    cost = compile_regressor(model.cost_model)
    assert cost is not None
    assert [cost(row) for row in x] == pytest.approx(model.cost_model.predict(x).tolist(), abs=1e-9)


def test_an_unknown_estimator_falls_back_to_sklearn() -> None:
    assert compile_proba(object()) is None
    assert compile_regressor(object()) is None
