"""Re-fitting the verifier's head on the operator's labelled sample, judged on rows it was not fitted on.

The verifier trained on other benchmarks ranks a new benchmark's failures only weakly
(docs/router.md). A sample of the operator's own traffic carries labels, so each rung's head can be
re-fitted on it: a strongly regularised, sigmoid-calibrated logistic regression on the same answer
features (the same pipeline types as a trained verifier, so the artifact, its type allow-list and
the numpy fast path are unchanged). Which head a rung keeps, the transferred one or a refit at
one of a few regularisation strengths, is chosen by cross-validation inside the sample, by
question group: the ranking of failures (area under the ROC curve) on the rows each fold's head
did not see. A refit is kept only when it ranks better by `MIN_AUC_GAIN`, than the transferred
head and than chance.

The operating point must then be chosen on priorities the head was not fitted on, or the search
would trust a head that memorised the sample: `Refit.inputs` carries the cross-fitted priorities
of the chosen head for every sample row (for the transferred head, its own), and the final head,
fitted on the whole sample, is what the artifact ships.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from router.offline.cascade import CascadeInputs
from router.offline.fit import SEED, FeatureMemo, FittedParts, group_of, not_good_enough, verifier_rows
from router.offline.outcomes import OutcomeRow
from router.runtime.answer_features import ANSWER_FEATURE_NAMES, VERIFIER_FEATURE_NAMES
from router.runtime.model import positive_proba, relative_top_cost

FloatArray = NDArray[np.float64]
# Inverse regularisation strengths tried (scaled features): strong shrinkage for a few hundred rows.
REFIT_C: tuple[float, ...] = (0.1, 1.0, 10.0)
REFIT_FOLDS = 5
# Fewer rows of either class than this at a rung and its head is not re-fitted.
MIN_CLASS_ROWS = 10
# A refit replaces the transferred head only when its cross-validated AUC is this much higher.
MIN_AUC_GAIN = 0.02


# The cheapest strong signal: do the final answers of the rungs tried agree (docs/router.md). These
# are the answer features from the count of earlier answers to the similarity of their texts.
AGREEMENT_FEATURES: tuple[str, ...] = ANSWER_FEATURE_NAMES[
    ANSWER_FEATURE_NAMES.index("prev_count") : ANSWER_FEATURE_NAMES.index("prev_text_similarity") + 1
]


def only_columns(x: FloatArray, columns: Sequence[int] | None) -> FloatArray:
    """`x` with every column but `columns` set to its mean: a head fitted on it gives them weight 0.

    Scaled, a constant column is all zeros, so the regularised fit leaves its coefficient at 0 and
    the head reads the full feature vector at run time while using only `columns`.
    """
    if columns is None or not len(x):
        return x
    out = np.repeat(x.mean(axis=0, keepdims=True), len(x), axis=0)
    out[:, list(columns)] = x[:, list(columns)]
    return out


def make_head(c: float) -> CalibratedClassifierCV:
    """Scaled answer features -> logistic regression with inverse strength `c`, sigmoid-calibrated."""
    base = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=c, max_iter=2000))])
    return CalibratedClassifierCV(
        base, method="sigmoid", cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=SEED), ensemble=False
    )


@dataclass(frozen=True)
class Cells:
    """Rung k's verifier rows in a sample: (row position, start rung), features, label."""

    where: list[tuple[int, int]]
    x: FloatArray
    y: NDArray[np.int64]


def rung_cells(rows: Sequence[OutcomeRow], ladder: Sequence[str], k: int, rungs_above: int, memo: FeatureMemo) -> Cells:
    where: list[tuple[int, int]] = []
    feats: list[list[float]] = []
    labels: list[int] = []
    for pos, row in enumerate(rows):
        label = int(not_good_enough(row, ladder[k], ladder[-1]))
        for start, vec in verifier_rows(row, ladder, k, rungs_above, memo):
            where.append((pos, start))
            feats.append(vec)
            labels.append(label)
    width = len(feats[0]) if feats else 0
    return Cells(where, np.asarray(feats, dtype=np.float64).reshape(len(feats), width), np.asarray(labels, np.int64))


def question_folds(rows: Sequence[OutcomeRow], seed: int) -> NDArray[np.int64]:
    """Fold of each row by its question group (repeats of a question share a fold)."""
    return np.asarray(
        [zlib.crc32(f"{seed}:{group_of(r)}".encode()) % REFIT_FOLDS for r in rows],
        dtype=np.int64,
    )


def within_fold_auc(y: NDArray[np.int64], p: FloatArray, fold: NDArray[np.int64]) -> float:
    """Mean over folds of the AUC within the fold.

    Pooled across folds, cross-fitted probabilities rank worse than random even for a head with no
    signal: a fold whose training rows hold more failures holds fewer itself, yet its head's
    baseline is higher. Within one fold every row was scored by the same head.
    """
    aucs = []
    for f in np.unique(fold):
        m = (fold == f) & np.isfinite(p)
        if len(set(y[m].tolist())) == 2:
            aucs.append(float(roc_auc_score(y[m], p[m])))
    return float(np.mean(aucs)) if aucs else float("nan")


@dataclass(frozen=True)
class Head:
    """A candidate head: inverse regularisation strength, and the feature columns it may read (None: all)."""

    name: str
    c: float
    columns: tuple[int, ...] | None = None

    def fit(self, x: FloatArray, y: NDArray[np.int64]) -> CalibratedClassifierCV:
        head = make_head(self.c).fit(only_columns(x, self.columns), y)
        if self.columns is not None:
            # The solver leaves rounding noise (~1e-15) on the constant columns; at run time they
            # vary, and that noise would break ties between otherwise equal answers.
            clf = head.calibrated_classifiers_[0].estimator.named_steps["clf"]
            keep = np.zeros(clf.coef_.shape[1], dtype=bool)
            keep[list(self.columns)] = True
            clf.coef_[:, ~keep] = 0.0
        return head


def candidate_heads() -> list[Head]:
    """Full refits at each strength of REFIT_C, and a refit on the agreement features alone."""
    agreement = tuple(VERIFIER_FEATURE_NAMES.index(n) for n in AGREEMENT_FEATURES)
    return [*(Head(f"refit C={c:g}", c) for c in REFIT_C), Head("agreement", 1.0, agreement)]


def _cross_fitted(cells: Cells, row_fold: NDArray[np.int64], head: Head) -> FloatArray:
    """P(not good enough) of every cell from a head fitted on the other folds (NaN where one can't be)."""
    fold = row_fold[[pos for pos, _ in cells.where]] if cells.where else np.zeros(0, np.int64)
    out = np.full(len(cells.y), np.nan)
    for f in range(REFIT_FOLDS):
        test = fold == f
        train = ~test
        if not test.any() or min(np.bincount(cells.y[train], minlength=2)) < 3:
            continue
        out[test] = positive_proba(head.fit(cells.x[train], cells.y[train]), cells.x[test])
    return out


@dataclass(frozen=True)
class Refit:
    """The parts with each rung's chosen head, and the sample's inputs under cross-fitted priorities."""

    parts: FittedParts
    inputs: CascadeInputs
    summary: list[dict[str, Any]]


def refit_verifiers(
    rows: Sequence[OutcomeRow],
    ladder: Sequence[str],
    parts: FittedParts,
    inputs: CascadeInputs,
    prompt: FloatArray,
    memo: FeatureMemo,
    rungs_above: Sequence[int],
    *,
    seed: int = 7,
    candidates: Sequence[Head] | None = None,
) -> Refit:
    """Per rung but the top: keep the transferred head of `parts` or re-fit one on `rows` (see module).

    `inputs` are the cascade arrays of `rows` under `parts`, `prompt` their prompt features, and
    `rungs_above[k]` how many rungs of the model's ladder lie above rung k of `ladder`;
    `candidates` default to `candidate_heads()`.
    """
    row_fold = question_folds(rows, seed)
    relative = relative_top_cost(parts.cost_model, parts.cost_reference_log_usd, prompt) if len(rows) else np.ones(0)
    verify = inputs.verify.copy()
    heads = list(parts.verifiers)
    summary: list[dict[str, Any]] = []
    for k in range(len(ladder) - 1):
        cells = rung_cells(rows, ladder, k, rungs_above[k], memo)
        counts = np.bincount(cells.y, minlength=2) if len(cells.y) else np.zeros(2, np.int64)
        entry: dict[str, Any] = {"rung": k, "cells": len(cells.y), "failures": int(counts[1]), "head": "transferred"}
        summary.append(entry)
        if min(counts) < MIN_CLASS_ROWS:
            entry["why"] = f"fewer than {MIN_CLASS_ROWS} rows of a class"
            continue
        fold = row_fold[[pos for pos, _ in cells.where]]
        transferred = positive_proba(parts.verifiers[k], cells.x)
        base_auc = within_fold_auc(cells.y, transferred, fold)
        entry["auc_transferred"] = round(base_auc, 4)
        best: tuple[float, Head, FloatArray] | None = None
        for head in candidate_heads() if candidates is None else candidates:
            oof = _cross_fitted(cells, row_fold, head)
            if np.isnan(oof).any():
                continue
            auc = within_fold_auc(cells.y, oof, fold)
            entry[f"auc {head.name}"] = round(auc, 4)
            if np.isfinite(auc) and (best is None or auc > best[0]):
                best = (auc, head, oof)
        # Better than the transferred head, and than chance: a constant head beats a transferred
        # head that ranks a little backwards, but carries no signal of its own.
        if best is None or not (best[0] >= max(base_auc, 0.5) + MIN_AUC_GAIN):
            continue
        _, head, oof = best
        entry["head"] = head.name
        heads[k] = head.fit(cells.x, cells.y)
        for (pos, start), p in zip(cells.where, oof, strict=True):
            verify[pos, start, k] = p / relative[pos]
    refit_parts = replace(parts, verifiers=tuple(heads))
    return Refit(refit_parts, replace(inputs, verify=verify), summary)
