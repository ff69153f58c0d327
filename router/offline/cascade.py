"""Replay a routing + cascade policy over outcome tables and pick its operating point.

The policy: the pre-router picks the start rung (the first rung whose score is under its start
threshold, else the top); each rung below the top answers, and the verifier's probability that
the answer is not good enough, divided by what the top rung would cost for this prompt relative to
a typical one (gain per dollar), is compared with that rung's threshold: above it, the request
climbs one rung. Every rung called is paid for. Everything is vectorised over requests so a grid search
over thresholds takes a fraction of a second.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from router.runtime.operating_point import OperatingPoint

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class CascadeInputs:
    """Per-request arrays for a ladder of K rungs (n requests).

    scores, cost_usd: (n, K). start_scores: (n, K-1), the pre-router's probabilities.
    verify: (n, K, K-1), verify[r, s, k] = escalation priority of rung k's answer when the
    cascade started at rung s (it sees the answers of rungs s..k-1); NaN where k < s. The
    priority is the verifier's probability over the prompt's relative top-rung cost.
    """

    scores: FloatArray
    cost_usd: FloatArray
    start_scores: FloatArray
    verify: FloatArray


@dataclass(frozen=True, slots=True)
class CascadeResult:
    quality: float
    cost_usd: float
    quality_ratio: float
    cost_ratio: float
    served_share: tuple[float, ...]
    called_share: tuple[float, ...]


def start_rungs(start_scores: FloatArray, thresholds: tuple[float, ...]) -> IntArray:
    """First rung whose score is under its threshold, else the top rung (K-1)."""
    n, k_minus_1 = start_scores.shape
    start = np.full(n, k_minus_1, dtype=np.int64)
    for k in range(k_minus_1 - 1, -1, -1):
        start = np.where(start_scores[:, k] < thresholds[k], k, start)
    return start


def simulate(inputs: CascadeInputs, point: OperatingPoint) -> CascadeResult:
    """Quality and cost of the cascade at one operating point, relative to always-top."""
    n, k_total = inputs.scores.shape
    rows = np.arange(n)
    start = start_rungs(inputs.start_scores, point.start_thresholds)
    served = np.full(n, -1, dtype=np.int64)
    cost = np.zeros(n)
    called = np.zeros(k_total)
    for k in range(k_total):
        active = (start <= k) & (served < 0)
        cost += np.where(active, inputs.cost_usd[:, k], 0.0)
        called[k] = active.mean()
        if k == k_total - 1:
            served = np.where(active, k, served)
            break
        prob = inputs.verify[rows, start, k]
        accept = active & ~(prob > point.verify_thresholds[k])
        served = np.where(accept, k, served)
    quality = float(inputs.scores[rows, served].mean())
    top_quality = float(inputs.scores[:, -1].mean())
    top_cost = float(inputs.cost_usd[:, -1].sum())
    total_cost = float(cost.sum())
    return CascadeResult(
        quality=quality,
        cost_usd=total_cost,
        quality_ratio=quality / top_quality if top_quality > 0 else float("nan"),
        cost_ratio=total_cost / top_cost if top_cost > 0 else float("nan"),
        served_share=tuple(float((served == k).mean()) for k in range(k_total)),
        called_share=tuple(float(c) for c in called),
    )


def _grid(values: FloatArray, steps: int) -> list[float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [0.5]
    qs = np.quantile(finite, np.linspace(0.0, 1.0, steps))
    # -1 escalates everything, 2 nothing; quantiles in between.
    return sorted({-1.0, 2.0, *(float(q) for q in qs)})


def choose_operating_point(
    inputs: CascadeInputs,
    target_quality_ratio: float = 0.95,
    max_cost_ratio: float = 0.50,
    steps: int = 21,
) -> tuple[OperatingPoint, CascadeResult]:
    """Cheapest point reaching the quality target; else the best quality within the cost cap.

    Start thresholds are searched on a shared value for every rung (2.0 = always start at the
    cheapest rung); verifier thresholds per rung on quantiles of that rung's probabilities.
    """
    k_minus_1 = inputs.start_scores.shape[1]
    start_grid = [2.0, *_grid(inputs.start_scores[:, 0], 8)[1:-1]]
    verify_grids = [_grid(inputs.verify[:, :, k].ravel(), steps) for k in range(k_minus_1)]
    best_meeting: tuple[OperatingPoint, CascadeResult] | None = None
    best_capped: tuple[OperatingPoint, CascadeResult] | None = None
    for start_t in start_grid:
        for taus in itertools.product(*verify_grids):
            point = OperatingPoint(tuple([start_t] * k_minus_1), tuple(taus))
            result = simulate(inputs, point)
            if result.quality_ratio >= target_quality_ratio and (
                best_meeting is None or result.cost_ratio < best_meeting[1].cost_ratio
            ):
                best_meeting = (point, result)
            if result.cost_ratio <= max_cost_ratio and (
                best_capped is None or result.quality_ratio > best_capped[1].quality_ratio
            ):
                best_capped = (point, result)
    if best_meeting is not None and best_meeting[1].cost_ratio <= max_cost_ratio:
        return best_meeting
    if best_capped is not None:
        return best_capped
    if best_meeting is not None:
        return best_meeting
    always_top = OperatingPoint(tuple([-1.0] * k_minus_1), tuple([-1.0] * k_minus_1))
    return always_top, simulate(inputs, always_top)
