"""Fitting the pre-router's lexical head on the operator's sample (`router.runtime.lexical`).

For each rung but the top, a logistic regression on the sample's hashed prompt words learns "this
rung is not good enough for this prompt". Like the verifier's refit (`router.offline.refit`) it is
judged by cross-validation inside the sample, by question group, and kept only when its ranking of
the rung's failures beats the transferred scorer's and chance by `MIN_AUC_GAIN`. The sample's start
scores become the head's cross-fitted probabilities (so the operating point is placed on scores the
head was not fitted on); the head fitted on the whole sample is what the artifact ships.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_matrix
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from router.offline.cascade import CascadeInputs
from router.offline.fit import group_of
from router.offline.outcomes import OutcomeRow
from router.offline.refit import MIN_AUC_GAIN, MIN_CLASS_ROWS, REFIT_FOLDS, question_folds, within_fold_auc
from router.runtime.lexical import DEFAULT_BUCKETS, LexicalHead, hashed_counts, logistic

FloatArray = NDArray[np.float64]
# Inverse regularisation strengths tried (unit-length rows of a few hundred to a few thousand prompts).
LEXICAL_C: tuple[float, ...] = (0.3, 1.0, 3.0)


def lexical_matrix(rows: Sequence[OutcomeRow], buckets: int = DEFAULT_BUCKETS) -> csr_matrix:
    """The rows' hashed prompt words as a sparse (rows x buckets) matrix."""
    data: list[float] = []
    cols: list[int] = []
    indptr = [0]
    for row in rows:
        counts = hashed_counts(row.prompt, buckets)
        cols.extend(counts)
        data.extend(counts.values())
        indptr.append(len(cols))
    return csr_matrix((data, cols, indptr), shape=(len(rows), buckets), dtype=np.float64)


def _stratified_folds(y: NDArray[np.int64], groups: NDArray[np.int64], seed: int) -> NDArray[np.int64]:
    """Folds by question group with each fold's failure rate close to the sample's.

    The start scores of the sample are pooled across folds to place one threshold; folds with
    different failure rates give heads with different baselines, and pooled, their probabilities
    would not be on one scale (by plain question-group folds, MMLU's lexical head placed a point
    costlier than the best mix though it ranked failures better than the transferred scorer).
    """
    folds = np.zeros(len(y), dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=REFIT_FOLDS, shuffle=True, random_state=seed)
    for f, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
        folds[test] = f
    return folds


def _fit(x: csr_matrix, y: NDArray[np.int64], c: float) -> LexicalHead:
    clf = LogisticRegression(C=c, max_iter=2000).fit(x, y)
    return LexicalHead(np.asarray(clf.coef_[0], dtype=np.float64), float(clf.intercept_[0]))


def head_proba(head: LexicalHead, x: csr_matrix) -> FloatArray:
    """The head's probabilities for the rows of `x` (what `LexicalHead.proba` gives one prompt)."""
    return logistic(np.asarray(x @ head.weights, dtype=np.float64) + head.intercept)


@dataclass(frozen=True)
class StartRefit:
    """Each rung's lexical head (None: the transferred scorer stays) and the sample's start scores."""

    heads: tuple[LexicalHead | None, ...]
    inputs: CascadeInputs
    summary: list[dict[str, Any]]


def refit_start_heads(rows: Sequence[OutcomeRow], inputs: CascadeInputs, *, seed: int = 7) -> StartRefit:
    """Per rung but the top: keep the transferred scorer or fit a lexical head on `rows` (see module).

    `inputs` are the cascade arrays of `rows` (row i of each is rows[i]).
    """
    x = lexical_matrix(rows)
    groups = np.asarray([group_of(r) for r in rows], dtype=np.int64)
    start = inputs.start_scores.copy()
    heads: list[LexicalHead | None] = []
    summary: list[dict[str, Any]] = []
    for k in range(inputs.scores.shape[1] - 1):
        y = (inputs.scores[:, k] < inputs.scores[:, -1]).astype(np.int64)
        counts = np.bincount(y, minlength=2)
        row_fold = _stratified_folds(y, groups, seed) if min(counts) >= REFIT_FOLDS else question_folds(rows, seed)
        entry: dict[str, Any] = {"rung": k, "rows": len(y), "failures": int(counts[1]), "head": "transferred"}
        summary.append(entry)
        heads.append(None)
        if min(counts) < MIN_CLASS_ROWS:
            entry["why"] = f"fewer than {MIN_CLASS_ROWS} rows of a class"
            continue
        base_auc = within_fold_auc(y, inputs.start_scores[:, k], row_fold)
        entry["auc_transferred"] = round(base_auc, 4)
        best: tuple[float, float, FloatArray] | None = None
        for c in LEXICAL_C:
            oof = np.full(len(y), np.nan)
            for f in range(REFIT_FOLDS):
                test = row_fold == f
                if test.any() and min(np.bincount(y[~test], minlength=2)) >= 3:
                    oof[test] = head_proba(_fit(x[~test], y[~test], c), x[test])
            if np.isnan(oof).any():
                continue
            auc = within_fold_auc(y, oof, row_fold)
            entry[f"auc lexical C={c:g}"] = round(auc, 4)
            if np.isfinite(auc) and (best is None or auc > best[0]):
                best = (auc, c, oof)
        if best is None or not best[0] >= max(base_auc, 0.5) + MIN_AUC_GAIN:
            continue
        _, c, oof = best
        entry["head"] = f"lexical C={c:g}"
        heads[k] = _fit(x, y, c)
        start[:, k] = oof
    return StartRefit(tuple(heads), replace(inputs, start_scores=start), summary)


def with_lexical_scores(
    inputs: CascadeInputs, rows: Sequence[OutcomeRow], heads: Sequence[LexicalHead | None]
) -> CascadeInputs:
    """`inputs` of `rows` with the start scores of each rung that has a lexical head taken from it."""
    if not any(h is not None for h in heads):
        return inputs
    x = lexical_matrix(rows)
    start = inputs.start_scores.copy()
    for k, head in enumerate(heads):
        if head is not None:
            start[:, k] = head_proba(head, x)
    return replace(inputs, start_scores=start)
