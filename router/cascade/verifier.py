"""The cascade verifier the gateway calls on a real answer: accept it, or climb one rung.

`Verifier.verify(prompt, answer, logprobs)` returns a `Verdict` with the probability that the
answer is not good enough (a higher rung would do better) and the decision at the operating point
stored in the artifact. Pass the answers of rungs already tried in `previous_answers`: agreement
between two independent models is the strongest signal the verifier has.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router.cascade.features import verifier_features
from router.scoring.model import RouterModel, positive_proba

# The outcome tables carry no token logprobs, so the trained pipelines never saw them. When a
# tier returns them, the verifier blends in their own evidence: 1 - exp(mean logprob) is the
# average per-token "surprise"; this weight is a documented prior, not a fitted number.
LOGPROB_WEIGHT = 0.5


@dataclass(frozen=True, slots=True)
class Verdict:
    """The verifier's answer: escalate or not, with its probability and the threshold used."""

    escalate: bool
    p_not_good_enough: float
    threshold: float
    rung: int
    reason: str


class Verifier:
    """Answer-level accept/escalate decisions for every rung of a trained model but the top."""

    def __init__(self, model: RouterModel, thresholds: Sequence[float] | None = None) -> None:
        self._model = model
        chosen = thresholds if thresholds is not None else model.operating_point.verify_thresholds
        if len(chosen) != len(model.ladder) - 1:
            raise ValueError("one verifier threshold per rung but the top")
        self._thresholds = tuple(float(t) for t in chosen)

    @property
    def version(self) -> str:
        return self._model.version

    def probability(
        self,
        prompt_text: str,
        answer_text: str,
        logprobs: Sequence[float] | None = None,
        *,
        rung: int = 0,
        previous_answers: Sequence[str] = (),
    ) -> float:
        """P(this rung's answer is not good enough), in [0, 1]."""
        top = len(self._model.ladder) - 1
        if rung >= top:
            return 0.0
        rung = max(rung, 0)
        row = np.asarray(
            [verifier_features(prompt_text, answer_text, rung, previous_answers, logprobs)], dtype=np.float64
        )
        p = float(positive_proba(self._model.verifiers[rung], row)[0])
        finite = [x for x in (logprobs or []) if math.isfinite(x)]
        if finite:
            surprise = 1.0 - math.exp(max(min(sum(finite) / len(finite), 0.0), -50.0))
            p = (1.0 - LOGPROB_WEIGHT) * p + LOGPROB_WEIGHT * surprise
        return min(max(p, 0.0), 1.0)

    def verify(
        self,
        prompt_text: str,
        answer_text: str,
        logprobs: Sequence[float] | None = None,
        *,
        rung: int = 0,
        previous_answers: Sequence[str] = (),
    ) -> Verdict:
        """Accept or escalate the answer of ladder rung `rung` (0 = cheapest)."""
        top = len(self._model.ladder) - 1
        if rung >= top:
            return Verdict(False, 0.0, 1.0, rung, "top-rung")
        p = self.probability(prompt_text, answer_text, logprobs, rung=rung, previous_answers=previous_answers)
        threshold = self._thresholds[max(rung, 0)]
        escalate = p > threshold
        return Verdict(escalate, p, threshold, rung, "above-threshold" if escalate else "accepted")
