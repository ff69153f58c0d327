"""Quality-versus-share curves, APGR and CPT, as in the RouteLLM paper.

Sweep the share of requests sent to the large model from 0 to 1, sending the requests with the
highest scores first; quality(share) is the mean score. APGR is the area between that curve and
the small model's quality over the small-to-large gap; CPT(x) the smallest share that recovers x
of the gap. All pure numpy on arrays of per-request scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
# Per-request values: a list of floats or any numpy array.
Values: TypeAlias = Sequence[float] | np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class SweepCurve:
    """Quality at each share of requests routed to the large model (share 0..1 in n+1 steps)."""

    share: FloatArray
    quality: FloatArray
    small_quality: float
    large_quality: float


def sweep(small: Values, large: Values, router_score: Values) -> SweepCurve:
    """Route the k highest-scored requests to large, for k = 0..n (ties broken by order)."""
    s = np.asarray(small, dtype=np.float64)
    lg = np.asarray(large, dtype=np.float64)
    score = np.asarray(router_score, dtype=np.float64)
    n = len(s)
    if n == 0:
        raise ValueError("sweep needs at least one request")
    order = np.argsort(-score, kind="stable")
    gain = (lg - s)[order]
    totals = s.sum() + np.concatenate([[0.0], np.cumsum(gain)])
    return SweepCurve(
        share=np.arange(n + 1, dtype=np.float64) / n,
        quality=totals / n,
        small_quality=float(s.mean()),
        large_quality=float(lg.mean()),
    )


def _gap(curve: SweepCurve) -> float:
    return curve.large_quality - curve.small_quality


def apgr(curve: SweepCurve) -> float:
    """Average performance gap recovered: area over the small baseline / (large - small)."""
    gap = _gap(curve)
    if abs(gap) < 1e-12:
        return float("nan")
    area = float(np.trapezoid(curve.quality - curve.small_quality, curve.share))
    return area / gap


def cpt(curve: SweepCurve, fraction: float) -> float:
    """Call-performance threshold: smallest large share whose quality recovers `fraction` of the gap."""
    target = curve.small_quality + fraction * _gap(curve)
    reached = np.nonzero(curve.quality >= target - 1e-12)[0]
    return float(curve.share[reached[0]]) if len(reached) else 1.0


def random_apgr(small: Values, large: Values) -> float:
    """Expected APGR of random routing: the straight line from small to large, i.e. 0.5."""
    gap = float(np.mean(large) - np.mean(small))
    return float("nan") if abs(gap) < 1e-12 else 0.5


def oracle_score(small: Values, large: Values) -> FloatArray:
    """The score an all-knowing router would give: the realised gain of the large model."""
    return np.asarray(large, dtype=np.float64) - np.asarray(small, dtype=np.float64)
