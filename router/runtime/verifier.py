"""The cascade verifier: a tier's real answer -> accept it, or climb one rung.

`Verifier.verify(prompt, answer, logprobs)` returns a `Verdict` with the probability that the
answer is not good enough (a higher rung would do better) and the decision at the operating point
stored in the artifact. The decision weighs that probability against what the top rung would
charge for this prompt (relative to a typical prompt): a long code answer from the frontier model
costs several times a one-letter answer, so the same doubt buys less there. Pass the answers of
rungs already tried in `previous_answers`: agreement between two independent models is the
strongest signal the verifier has.

Token logprobs, when the tier returns them, are features of the answer like the others (their
mean, minimum and first value): the head gives them the weight its training data showed. The
outcome tables carry none, so a shipped head gives them no weight; `router calibrate` re-fits the
head on an operator's sample that records them (`logprobs` in the rows) and learns it there. The
probability here is the same function of the answer that calibration placed the threshold on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from router.runtime.answer_features import verifier_features
from router.runtime.cascade import Judgement
from router.runtime.model import RouterModel, RowScorer, relative_top_cost_one
from router.runtime.prompt_features import prompt_features


@dataclass(frozen=True, slots=True)
class Verdict:
    """The verifier's answer: escalate or not, with its probability and the threshold used."""

    escalate: bool
    p_not_good_enough: float
    # p_not_good_enough / relative_cost: what the threshold is compared with.
    priority: float
    relative_cost: float
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
        self._rows = [RowScorer(v) for v in model.verifiers]
        self._cost = RowScorer(model.cost_model, regressor=True) if model.cost_model is not None else None

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
        return self.verify(
            prompt_text, answer_text, logprobs, rung=rung, previous_answers=previous_answers
        ).p_not_good_enough

    def verify(
        self,
        prompt_text: str,
        answer_text: str,
        logprobs: Sequence[float] | None = None,
        *,
        rung: int = 0,
        previous_answers: Sequence[str] = (),
    ) -> Verdict:
        """Accept or escalate the answer of ladder rung `rung` (0 = cheapest).

        `rung` indexes the model's ladder (`RouterModel.rung_index(tier.router_rung)`), not the
        profile's tiers; `previous_answers` are the answers of the rungs tried before, in order.
        """
        top = len(self._model.ladder) - 1
        if rung >= top:
            return Verdict(False, 0.0, 0.0, 1.0, 1.0, rung, "top-rung")
        rung = max(rung, 0)
        prompt_row = prompt_features(prompt_text)
        features = verifier_features(prompt_text, answer_text, top - rung, previous_answers, logprobs, prompt_row)
        p = min(max(self._rows[rung](np.asarray(features, dtype=np.float64)), 0.0), 1.0)
        row = np.asarray(prompt_row, dtype=np.float64)
        relative = relative_top_cost_one(self._cost, self._model.cost_reference_log_usd, row)
        priority = p / relative
        threshold = self._thresholds[rung]
        escalate = priority > threshold
        reason = "above-threshold" if escalate else "accepted"
        return Verdict(escalate, p, priority, relative, threshold, rung, reason)


class VerifierJudge:
    """`AnswerJudge` over a `Verifier`: maps the gateway's tiers to the model's ladder rungs."""

    def __init__(self, verifier: Verifier, model: RouterModel, tier_rungs: Mapping[str, str]) -> None:
        self._verifier = verifier
        self._rung = {tier: model.rung_index(rung) for tier, rung in tier_rungs.items()}

    def judge(
        self,
        tier: str,
        prompt: str,
        answer: str,
        logprobs: Sequence[float] | None,
        previous_answers: Sequence[str],
    ) -> Judgement:
        rung = self._rung.get(tier)
        if rung is None:
            return Judgement(False, 0.0, "tier-without-rung")
        verdict = self._verifier.verify(prompt, answer, logprobs, rung=rung, previous_answers=previous_answers)
        reason = "verifier-doubts-answer" if verdict.escalate else verdict.reason
        return Judgement(verdict.escalate, verdict.p_not_good_enough, reason)
