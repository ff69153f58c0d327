"""The learned scorer: prompt features -> calibrated P(rung is not good enough), per ladder rung."""

from router.scoring.model import LearnedScorer, RouterModel

__all__ = ["LearnedScorer", "RouterModel"]
