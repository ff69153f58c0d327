"""Fitting the scorer and verifier pipelines on outcome rows, with group-aware cross-validation.

Targets: rung k "is not good enough" for a prompt when its score is below the top rung's score
(a higher rung would have done better). The scorer sees only the prompt; the verifier sees the
prompt, rung k's answer and the answers of the rungs tried before it. Groups are the question
block, so a question repeated across rows never sits on both sides of a fold.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from router.offline.cascade import CascadeInputs
from router.offline.outcomes import OutcomeRow
from router.runtime.answer_features import verifier_features
from router.runtime.model import positive_proba, relative_top_cost
from router.runtime.prompt_features import FEATURE_NAMES, last_block, prompt_features

Progress = Callable[[str], None]
FloatArray = NDArray[np.float64]
SEED = 7


def _quiet(_: str) -> None:
    return None


def group_of(row: OutcomeRow) -> int:
    """Stable group id: the question block, so repeats of a question share a fold."""
    return zlib.crc32(last_block(row.prompt).encode("utf-8", "replace"))


def not_good_enough(row: OutcomeRow, rung: str, top: str) -> bool:
    return row.scores[rung] < row.scores[top] - 1e-9


def _calibration_folds() -> StratifiedKFold:
    # Shuffled: outcome files arrive sorted by benchmark, and unshuffled folds would each hold out
    # most of one benchmark, so the calibrator would learn to flatten every probability.
    return StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)


def make_scorer_pipeline() -> CalibratedClassifierCV:
    """Scaled features -> logistic regression, sigmoid-calibrated on internal folds."""
    base = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=0.5, max_iter=2000))])
    return CalibratedClassifierCV(base, method="sigmoid", cv=_calibration_folds(), ensemble=False)


def make_verifier_pipeline() -> CalibratedClassifierCV:
    """Scaled answer features -> logistic regression, sigmoid-calibrated.

    Boosted trees fitted the training benchmarks better and transferred worse: held out, their
    ranking of a rung's failures fell below what agreement alone gives (docs/router.md).
    """
    base = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=0.5, max_iter=2000))])
    return CalibratedClassifierCV(base, method="sigmoid", cv=_calibration_folds(), ensemble=False)


def make_cost_pipeline() -> HistGradientBoostingRegressor:
    """Prompt features -> log(top-rung cost in USD): task type sets the answer length, hence cost."""
    return HistGradientBoostingRegressor(max_iter=100, learning_rate=0.1, max_depth=3, random_state=SEED)


@dataclass(frozen=True)
class FittedParts:
    scorers: tuple[Any, ...]
    verifiers: tuple[Any, ...]
    cost_model: Any = None
    cost_reference_log_usd: float = 0.0


def _digest(values: Sequence[float]) -> str:
    return hashlib.blake2b(repr(tuple(values)).encode(), digest_size=6).hexdigest()


class FeatureMemo:
    """Feature vectors by row id, reused across rungs, folds and runs (`router.offline.feature_store`
    saves one to a file). Keys carry the feature names, so a changed vector is never reused."""

    def __init__(self, prompt: dict[str, list[float]] | None = None, answer: dict[str, list[float]] | None = None):
        self.prompt = prompt if prompt is not None else {}
        self.answer = answer if answer is not None else {}

    def prompt_row(self, row: OutcomeRow) -> list[float]:
        found = self.prompt.get(row.id)
        if found is None:
            found = self.prompt[row.id] = prompt_features(row.prompt)
        return found

    def verifier_row(self, row: OutcomeRow, answer_of: str, previous: Sequence[str], rungs_above: int) -> list[float]:
        logprobs = row.logprobs.get(answer_of)
        # A row's logprobs are part of its answer: never reuse a vector computed without them.
        key = f"{row.id}|{answer_of}|{','.join(previous)}|{rungs_above}" + (
            f"|lp{_digest(logprobs)}" if logprobs else ""
        )
        found = self.answer.get(key)
        if found is None:
            found = self.answer[key] = verifier_features(
                row.prompt,
                row.responses[answer_of],
                rungs_above,
                [row.responses[m] for m in previous],
                logprobs,
                prompt_row=self.prompt_row(row),
            )
        return found


# One memo per process unless a caller brings its own: features never change for a row id.
_MEMO = FeatureMemo()


class FeatureCache:
    """Prompt features of `rows` as one array (computed once per row id, see FeatureMemo)."""

    def __init__(self, rows: Sequence[OutcomeRow], memo: FeatureMemo | None = None) -> None:
        self.memo = _MEMO if memo is None else memo
        self.prompt = np.asarray([self.memo.prompt_row(r) for r in rows], dtype=np.float64).reshape(
            len(rows), len(FEATURE_NAMES)
        )


def _scorer_data(
    rows: Sequence[OutcomeRow], idx: Sequence[int], cache: FeatureCache, rung: str, top: str
) -> tuple[FloatArray, FloatArray]:
    keep = [i for i in idx if rows[i].has((rung, top))]
    y = np.asarray([not_good_enough(rows[i], rung, top) for i in keep], dtype=np.float64)
    return cache.prompt[keep], y


def verifier_rows(
    row: OutcomeRow,
    ladder: Sequence[str],
    k: int,
    rungs_above: int | None = None,
    memo: FeatureMemo | None = None,
) -> list[tuple[int, list[float]]]:
    """(start rung, features) for rung k's answer, for every start whose answers the row has.

    `rungs_above` is how many rungs of the model's own ladder lie above this one when `ladder` is a
    sub-ladder of it.
    """
    rung_feature = len(ladder) - 1 - k if rungs_above is None else rungs_above
    memo = _MEMO if memo is None else memo
    out: list[tuple[int, list[float]]] = []
    if ladder[k] not in row.responses:
        return out
    for start in range(k + 1):
        chain = ladder[start:k]
        if any(m not in row.responses for m in chain):
            continue
        out.append((start, memo.verifier_row(row, ladder[k], chain, rung_feature)))
    return out


def _verifier_data(
    rows: Sequence[OutcomeRow], idx: Sequence[int], ladder: Sequence[str], k: int, memo: FeatureMemo
) -> tuple[FloatArray, FloatArray]:
    feats: list[list[float]] = []
    ys: list[float] = []
    for i in idx:
        row = rows[i]
        if not row.has((ladder[k], ladder[-1])):
            continue
        label = float(not_good_enough(row, ladder[k], ladder[-1]))
        for _, vec in verifier_rows(row, ladder, k, memo=memo):
            feats.append(vec)
            ys.append(label)
    return np.asarray(feats, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def _fit(estimator: Any, x: FloatArray, y: FloatArray, what: str) -> Any:
    if len(y) < 20 or len(set(y.tolist())) < 2:
        raise ValueError(f"not enough labelled rows to fit the {what} ({len(y)} rows, both classes needed)")
    estimator.fit(x, y.astype(np.int64))
    return estimator


def fit_parts(
    rows: Sequence[OutcomeRow], idx: Sequence[int], ladder: Sequence[str], cache: FeatureCache
) -> FittedParts:
    """Fit one scorer and one verifier per rung but the top on rows[idx]."""
    top = ladder[-1]
    scorers = []
    verifiers = []
    for k, rung in enumerate(ladder[:-1]):
        x, y = _scorer_data(rows, idx, cache, rung, top)
        scorers.append(_fit(make_scorer_pipeline(), x, y, f"scorer for {rung}"))
        xv, yv = _verifier_data(rows, idx, ladder, k, cache.memo)
        verifiers.append(_fit(make_verifier_pipeline(), xv, yv, f"verifier for {rung}"))
    priced = [i for i in idx if top in rows[i].cost_usd and rows[i].cost_usd[top] > 0]
    if len(priced) < 20:
        return FittedParts(tuple(scorers), tuple(verifiers))
    log_cost = np.log(np.asarray([rows[i].cost_usd[top] for i in priced], dtype=np.float64))
    cost_model = make_cost_pipeline().fit(cache.prompt[priced], log_cost)
    return FittedParts(tuple(scorers), tuple(verifiers), cost_model, float(np.median(log_cost)))


def cascade_rows(rows: Sequence[OutcomeRow], ladder: Sequence[str], need_answers: bool = True) -> list[int]:
    """Indices of rows a cascade can be replayed on: scores, costs and answers for every rung.

    `need_answers=False` keeps rows without answers too: the verifier cannot judge them, so they
    are never escalated (routing by start rung or start mix only).
    """
    return [
        i
        for i, r in enumerate(rows)
        if r.has(ladder)
        and all(m in r.cost_usd for m in ladder)
        and (not need_answers or all(m in r.responses for m in ladder[:-1]))
    ]


def cascade_inputs(
    rows: Sequence[OutcomeRow],
    idx: Sequence[int],
    ladder: Sequence[str],
    parts: FittedParts,
    cache: FeatureCache,
    rung_ids: Sequence[int] | None = None,
    model_top: int | None = None,
) -> CascadeInputs:
    """Per-request arrays of outcomes and the parts' probabilities, for `simulate`.

    `parts` holds one scorer and verifier per rung of `ladder` but the top; `rung_ids` gives those
    rungs' indices in the model's ladder when `ladder` is a sub-ladder (default: 0, 1, ...).
    """
    ids = list(range(len(ladder) - 1)) if rung_ids is None else list(rung_ids)
    top = len(ladder) - 1 if model_top is None else model_top
    k_total = len(ladder)
    n = len(idx)
    scores = np.asarray([[rows[i].scores[m] for m in ladder] for i in idx], dtype=np.float64)
    cost = np.asarray([[rows[i].cost_usd[m] for m in ladder] for i in idx], dtype=np.float64)
    x = cache.prompt[list(idx)]
    start_scores = np.column_stack([positive_proba(s, x) for s in parts.scorers]) if n else np.zeros((0, k_total - 1))
    verify = np.full((n, k_total, k_total - 1), np.nan)
    for k in range(k_total - 1):
        cells: list[tuple[int, int]] = []
        feats: list[list[float]] = []
        for pos, i in enumerate(idx):
            for start, vec in verifier_rows(rows[i], ladder, k, top - ids[k], cache.memo):
                cells.append((pos, start))
                feats.append(vec)
        if feats:
            p = positive_proba(parts.verifiers[k], np.asarray(feats, dtype=np.float64))
            for (pos, start), value in zip(cells, p, strict=True):
                verify[pos, start, k] = value
    relative = relative_top_cost(parts.cost_model, parts.cost_reference_log_usd, x) if n else np.ones(0)
    # Escalation priority: probability of a better answer per (relative) dollar of the top rung.
    verify = verify / relative[:, None, None] if n else verify
    return CascadeInputs(scores, cost, start_scores, verify, relative)


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold predictions on the training rows (each row scored by a model that never saw it)."""

    prompt_scores: FloatArray  # (n_rows, K-1), NaN where the fold model could not score the rung
    cascade_idx: list[int]
    cascade: CascadeInputs


def out_of_fold(
    rows: Sequence[OutcomeRow],
    ladder: Sequence[str],
    cache: FeatureCache,
    folds: int = 5,
    progress: Progress = _quiet,
) -> OutOfFold:
    """Group k-fold predictions for every row, for metrics and the operating point."""
    n = len(rows)
    groups = np.asarray([group_of(r) for r in rows])
    prompt_scores = np.full((n, len(ladder) - 1), np.nan)
    c_idx = cascade_rows(rows, ladder)
    c_pos = {row_i: p for p, row_i in enumerate(c_idx)}
    parts_inputs: list[tuple[list[int], CascadeInputs]] = []
    splitter = GroupKFold(n_splits=folds)
    for fold, (train_i, test_i) in enumerate(splitter.split(np.zeros(n), groups=groups), start=1):
        progress(f"fold {fold}/{folds}: fitting on {len(train_i)} rows")
        parts = fit_parts(rows, train_i.tolist(), ladder, cache)
        for k, scorer in enumerate(parts.scorers):
            prompt_scores[test_i, k] = positive_proba(scorer, cache.prompt[test_i])
        test_c = [i for i in test_i.tolist() if i in c_pos]
        parts_inputs.append((test_c, cascade_inputs(rows, test_c, ladder, parts, cache)))
    order = [i for chunk, _ in parts_inputs for i in chunk]
    merged = CascadeInputs(
        scores=np.concatenate([c.scores for _, c in parts_inputs]),
        cost_usd=np.concatenate([c.cost_usd for _, c in parts_inputs]),
        start_scores=np.concatenate([c.start_scores for _, c in parts_inputs]),
        verify=np.concatenate([c.verify for _, c in parts_inputs]),
    )
    return OutOfFold(prompt_scores, order, merged)
