"""The trained router: per-rung scorer pipelines, per-rung verifier pipelines, operating point.

`RouterModel` is plain data (built by `router.offline.fit`, saved and loaded by
`router.runtime.artifact`). `LearnedScorer` implements `router.runtime.policy.Scorer` over it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router.runtime.fastpath import RowFn, compile_proba, compile_regressor
from router.runtime.lexical import LexicalHead
from router.runtime.operating_point import OperatingPoint
from router.runtime.policy import RoutingRequest
from router.runtime.prompt_features import prompt_features

# Bumped when the feature vector or the bundle layout changes; loading refuses other versions.
# 2: rungs named by position (small/mid/large), final answers found anywhere, start mixes.
# 3: optional per-rung lexical heads fitted on the operator's sample (a reader of 2 would ignore them
# and route by the wrong scores, so 2-readers must refuse these files).
ARTIFACT_FORMAT_VERSION = 3
READABLE_FORMAT_VERSIONS = (2, 3)
ARTIFACT_KIND = "tiergate-router"

# A ladder names rungs by position, never by model: an artifact trained on one ladder of models
# serves any other ladder of the same shape (the operator calibrates it to theirs).
RUNG_NAMES: tuple[str, ...] = ("small", "mid", "large")
# Profiles written for the first artifact named rungs by the model keys it was trained on.
LEGACY_RUNG_KEYS: dict[str, str] = {
    "mistralai/mistral-7b-chat": "small",
    "mistralai/mixtral-8x7b-chat": "mid",
    "gpt-4-1106-preview": "large",
}


def ladder_rungs(n: int) -> tuple[str, ...]:
    """Rung names of a ladder of `n` models, cheapest first: 2 -> small, large; 3 -> small, mid, large."""
    if n == 2:
        return (RUNG_NAMES[0], RUNG_NAMES[-1])
    if n == 3:
        return RUNG_NAMES
    raise ValueError(f"a ladder has two or three rungs, not {n}")


def prompt_hash_share(text: str) -> float:
    """A stable pseudo-random number in [0, 1) per prompt: how a start mix draws its rung."""
    return zlib.crc32(text.encode("utf-8", "replace")) / 2**32


@dataclass(frozen=True)
class RouterModel:
    """Everything a trained router needs at run time.

    scorers[k] / verifiers[k]: fitted scikit-learn estimators with `predict_proba` for rung k of
    `ladder` (every rung but the top). cost_model estimates what the top rung would charge for
    a prompt, relative to the training median, so escalation can weigh gain per dollar.
    metadata: version, training-data hash, metrics (JSON-safe).
    lexical_heads: empty, or one entry per rung but the top: a head fitted on the operator's sample
    (`router.runtime.lexical`) that replaces that rung's scorer, or None to keep it.
    """

    ladder: tuple[str, ...]
    scorers: tuple[Any, ...]
    verifiers: tuple[Any, ...]
    operating_point: OperatingPoint
    # Regressor: prompt features -> log(cost of the top rung in USD); None means "all equal".
    cost_model: Any = None
    cost_reference_log_usd: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    lexical_heads: tuple[LexicalHead | None, ...] = ()

    def __post_init__(self) -> None:
        if len(self.ladder) < 2:
            raise ValueError("a router needs a ladder of at least two rungs")
        if len(self.scorers) != len(self.ladder) - 1 or len(self.verifiers) != len(self.ladder) - 1:
            raise ValueError("one scorer and one verifier per rung but the top")
        if self.lexical_heads and len(self.lexical_heads) != len(self.ladder) - 1:
            raise ValueError("lexical heads: none, or one entry per rung but the top")

    def lexical_head(self, rung: int) -> LexicalHead | None:
        return self.lexical_heads[rung] if self.lexical_heads else None

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "unversioned"))

    def rung_index(self, rung: str) -> int:
        """Index of a rung name (or a first-artifact model key); raises KeyError naming the known rungs."""
        try:
            return self.ladder.index(LEGACY_RUNG_KEYS.get(rung, rung))
        except ValueError:
            raise KeyError(f"rung {rung!r} is not in the model's ladder {list(self.ladder)}") from None


def positive_proba(estimator: Any, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """P(class 1) for each row, clipped to [0, 1] (the estimator's classes are 0/1)."""
    proba = np.asarray(estimator.predict_proba(rows), dtype=np.float64)
    return np.clip(proba[:, -1], 0.0, 1.0)


# Bounds on the relative cost estimate so one odd prompt cannot force or forbid escalation alone.
_MIN_RELATIVE_COST = 0.05
_MAX_RELATIVE_COST = 20.0


def relative_top_cost(
    cost_model: Any, reference_log_usd: float, prompt_rows: np.ndarray[Any, Any]
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Estimated top-rung cost of each prompt over the training median (1.0 = a typical prompt)."""
    if cost_model is None:
        return np.ones(len(prompt_rows))
    return relative_from_log(np.asarray(cost_model.predict(prompt_rows), dtype=np.float64), reference_log_usd)


def relative_from_log(
    log_cost: np.ndarray[Any, np.dtype[np.float64]], reference_log_usd: float
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """exp(log cost - reference), bounded: one odd prompt cannot force or forbid escalation alone."""
    return np.clip(np.exp(log_cost - reference_log_usd), _MIN_RELATIVE_COST, _MAX_RELATIVE_COST)


class RowScorer:
    """One estimator evaluated one row at a time: the numpy fast path when it compiles, else sklearn."""

    def __init__(self, estimator: Any, regressor: bool = False) -> None:
        self._estimator = estimator
        self._regressor = regressor
        self._fast: RowFn | None = compile_regressor(estimator) if regressor else compile_proba(estimator)

    def __call__(self, row: np.ndarray[Any, np.dtype[np.float64]]) -> float:
        if self._fast is not None:
            return self._fast(row)
        if self._regressor:
            return float(self._estimator.predict(row[None, :])[0])
        return float(positive_proba(self._estimator, row[None, :])[0])


def relative_top_cost_one(cost: RowScorer | None, reference_log_usd: float, row: np.ndarray[Any, Any]) -> float:
    """`relative_top_cost` for a single prompt row."""
    if cost is None:
        return 1.0
    return float(np.clip(np.exp(cost(row) - reference_log_usd), _MIN_RELATIVE_COST, _MAX_RELATIVE_COST))


class LearnedScorer:
    """`Scorer` over a trained model: tier i's score = P(its rung is not good enough | prompt).

    `tier_rungs` maps gateway tiers (cheapest first) to ladder keys, as the profile's
    `router_rung` does; left out, the tiers are the model's ladder itself. A tier standing for the
    model's top rung scores 0.0 (nothing above it to do better). When the artifact's operating
    point is a start mix, every tier scores the prompt's hash share instead, so the policy's
    thresholds (the mix's cumulative shares) draw the start rung. A rung with a lexical head (fitted on
    the operator's sample) is scored by it instead of its scorer; a point placed per cost
    (`OperatingPoint.start_per_cost`) divides each score by the prompt's relative top-rung cost.
    """

    def __init__(self, model: RouterModel, tier_rungs: Sequence[str] | None = None) -> None:
        self._model = model
        rungs = list(tier_rungs) if tier_rungs is not None else list(model.ladder)
        self._indices = [model.rung_index(r) for r in rungs]
        self._top = len(model.ladder) - 1
        self._rows = [RowScorer(s) for s in model.scorers]
        self._lexical = [model.lexical_head(k) for k in range(len(model.scorers))]
        self._per_cost = model.operating_point.start_per_cost
        self._cost = RowScorer(model.cost_model, regressor=True) if model.cost_model is not None else None

    @property
    def version(self) -> str:
        return self._model.version

    def scores(self, request: RoutingRequest, n_rungs: int) -> list[float]:
        if n_rungs <= 0:
            return []
        if self._model.operating_point.mixes:
            # A start mix: one draw per prompt against the cumulative shares (the thresholds).
            share = prompt_hash_share(request.text)
            return [0.0 if i >= self._top else share for i in self._mapped(n_rungs)]
        needed = {i for i in self._indices[:n_rungs] if i < self._top}
        proba: dict[int, float] = {}
        row: np.ndarray[Any, np.dtype[np.float64]] | None = None
        for i in needed:
            head = self._lexical[i]
            if head is not None:
                proba[i] = head.proba(request.text)
                continue
            if row is None:
                row = np.asarray(prompt_features(request.text), dtype=np.float64)
            proba[i] = self._rows[i](row)
        if self._per_cost and needed:
            # Gain per dollar, as the operating point was placed (OperatingPoint.start_per_cost).
            if row is None:
                row = np.asarray(prompt_features(request.text), dtype=np.float64)
            relative = relative_top_cost_one(self._cost, self._model.cost_reference_log_usd, row)
            proba = {i: p / relative for i, p in proba.items()}
        return [proba.get(i, 0.0) for i in self._mapped(n_rungs)]

    def _mapped(self, n_rungs: int) -> list[int]:
        """The ladder index of each of the first `n_rungs` tiers; more tiers than mapped repeat the last."""
        out = self._indices[:n_rungs]
        return out + [out[-1] if out else self._top] * (n_rungs - len(out))
