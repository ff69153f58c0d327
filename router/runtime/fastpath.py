"""Exact single-row evaluation of the fitted pipelines in plain numpy.

scikit-learn's `predict_proba` validates its input at every layer and, for boosted trees, starts
an OpenMP team per call: about a millisecond and a half for one row on this project's CPUs, and
tens of milliseconds when the machine is busy. Routing scores one row at a time, so the fitted
parameters are read once and evaluated here instead. `compile_proba` returns None for a shape it
does not know, and callers then use `predict_proba`; tests check both paths agree on every rung.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

Row = NDArray[np.float64]
RowFn = Callable[[Row], float]


def _expit(z: float) -> float:
    return float(1.0 / (1.0 + np.exp(-np.clip(z, -500.0, 500.0))))


def _linear(pipe: Pipeline) -> RowFn | None:
    steps = [step for _, step in pipe.steps]
    if len(steps) != 2 or not isinstance(steps[0], StandardScaler) or not isinstance(steps[1], LogisticRegression):
        return None
    scaler, clf = steps
    mean = np.asarray(scaler.mean_ if scaler.with_mean else 0.0, dtype=np.float64)
    scale = np.asarray(scaler.scale_ if scaler.with_std else 1.0, dtype=np.float64)
    weights = np.asarray(clf.coef_[0], dtype=np.float64) / scale
    bias = float(clf.intercept_[0]) - float(np.dot(weights, mean * np.ones_like(weights)))
    return lambda x: float(np.dot(weights, x) + bias)


def _trees(model: HistGradientBoostingClassifier | HistGradientBoostingRegressor) -> RowFn | None:
    """Raw score (log-odds or regression value) of a boosted-tree model without categorical splits."""
    predictors = [p[0] for p in model._predictors]
    if any(len(p) != 1 for p in model._predictors):
        return None
    nodes = [p.nodes for p in predictors]
    if any(bool(n["is_categorical"].any()) for n in nodes):
        return None
    offsets = np.cumsum([0] + [len(n) for n in nodes[:-1]])
    flat = np.concatenate(nodes)
    feature = flat["feature_idx"].astype(np.int64)
    threshold = flat["num_threshold"].astype(np.float64)
    missing_left = flat["missing_go_to_left"].astype(bool)
    left = flat["left"].astype(np.int64)
    right = flat["right"].astype(np.int64)
    leaf = flat["is_leaf"].astype(bool)
    value = flat["value"].astype(np.float64)
    # Child indices are per tree; make them global once.
    for start, n in zip(offsets, nodes, strict=True):
        left[start : start + len(n)] += start
        right[start : start + len(n)] += start
    roots = offsets.astype(np.int64)
    depth = int(max(int(model.max_depth or 0), 0)) or 64
    baseline = float(np.ravel(model._baseline_prediction)[0])

    def raw(x: Row) -> float:
        at = roots.copy()
        for _ in range(depth + 1):
            inner = ~leaf[at]
            if not inner.any():
                break
            values = x[feature[at]]
            go_left = np.where(np.isnan(values), missing_left[at], values <= threshold[at])
            at = np.where(inner, np.where(go_left, left[at], right[at]), at)
        return baseline + float(value[at].sum())

    return raw


def _decision(estimator: Any) -> RowFn | None:
    if isinstance(estimator, Pipeline):
        return _linear(estimator)
    if isinstance(estimator, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        return _trees(estimator)
    return None


def _calibrator(calibrator: Any) -> Callable[[float], float] | None:
    if isinstance(calibrator, IsotonicRegression):
        xs = np.asarray(calibrator.X_thresholds_, dtype=np.float64)
        ys = np.asarray(calibrator.y_thresholds_, dtype=np.float64)
        return lambda f: float(np.interp(f, xs, ys))
    a, b = getattr(calibrator, "a_", None), getattr(calibrator, "b_", None)
    if a is not None and b is not None:
        return lambda f: _expit(-(float(a) * f + float(b)))
    return None


def compile_proba(estimator: Any) -> RowFn | None:
    """P(class 1) of one feature row, for a calibrated linear or tree classifier; None otherwise."""
    if not isinstance(estimator, CalibratedClassifierCV) or len(estimator.calibrated_classifiers_) != 1:
        return None
    inner = estimator.calibrated_classifiers_[0]
    if len(inner.calibrators) != 1:
        return None
    decision = _decision(inner.estimator)
    calibrate = _calibrator(inner.calibrators[0])
    if decision is None or calibrate is None:
        return None
    return lambda x: min(max(calibrate(decision(x)), 0.0), 1.0)


def compile_regressor(estimator: Any) -> RowFn | None:
    """The prediction of one feature row for a boosted-tree regressor; None otherwise."""
    if isinstance(estimator, HistGradientBoostingRegressor):
        return _trees(estimator)
    return None
