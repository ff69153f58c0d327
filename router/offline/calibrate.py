"""Threshold calibration for the pre-router: hit a share of large-tier traffic or a quality target.

The policy sends a request to the first tier whose score is under that tier's threshold. One
shared threshold t for every tier keeps the list ascending (the profile requires it) and leaves a
single number to search: a request reaches the top tier only when every cheaper tier scores >= t.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def routed_tier(scores: FloatArray, threshold: float) -> NDArray[np.int64]:
    """Tier index per request for a shared threshold (scores: (n, tiers-1))."""
    n, k_minus_1 = scores.shape
    tier = np.full(n, k_minus_1, dtype=np.int64)
    for k in range(k_minus_1 - 1, -1, -1):
        tier = np.where(scores[:, k] < threshold, k, tier)
    return tier


def _candidates(scores: FloatArray) -> list[float]:
    values = np.unique(np.round(scores.ravel(), 6))
    return [0.0, *[float(v) for v in values], 1.0 + 1e-9]


def threshold_for_large_share(scores: FloatArray, target_share: float) -> float:
    """The threshold whose share of requests routed to the top tier is closest to `target_share`."""
    if not 0.0 <= target_share <= 1.0:
        raise ValueError("target large share must lie in [0, 1]")
    if scores.shape[0] == 0:
        raise ValueError("calibration needs at least one request")
    top = scores.shape[1]
    best, best_gap = 1.0, float("inf")
    for t in _candidates(scores):
        share = float((routed_tier(scores, t) == top).mean())
        if abs(share - target_share) < best_gap - 1e-12:
            best, best_gap = t, abs(share - target_share)
    return min(max(best, 0.0), 1.0)


def threshold_for_quality(scores: FloatArray, quality: FloatArray, target_ratio: float) -> float:
    """The cheapest threshold (fewest top-tier requests) whose quality / always-top >= target.

    quality: (n, tiers), each tier's score per request. Falls back to 0.0 (always top) when no
    threshold reaches the target.
    """
    if scores.shape[0] == 0:
        raise ValueError("calibration needs at least one request")
    top_quality = float(quality[:, -1].mean())
    rows = np.arange(scores.shape[0])
    best_t, best_top_share = 0.0, float("inf")
    for t in _candidates(scores):
        tier = routed_tier(scores, t)
        ratio = float(quality[rows, tier].mean()) / top_quality if top_quality > 0 else 1.0
        top_share = float((tier == scores.shape[1]).mean())
        if ratio >= target_ratio and top_share < best_top_share - 1e-12:
            best_t, best_top_share = t, top_share
    return min(max(best_t, 0.0), 1.0)
