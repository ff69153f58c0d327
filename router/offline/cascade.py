"""Replay a routing + cascade policy over outcome tables and pick its operating point.

The policy: the start rung comes from the pre-router (the first rung whose prompt score is under
its start threshold, else the top) or from a fixed start mix (a share of requests per rung); each
rung below the top answers, and the verifier's probability that the answer is not good enough,
divided by what the top rung would cost for this prompt relative to a typical one (gain per
dollar), is compared with that rung's threshold: above it, the request climbs one rung. Every rung
called is paid for. A fixed mix of tiers is the special case of a start mix whose verifier never
escalates, so the search below can always fall back to the cheapest mix and is never worse than
it on the rows it is chosen on. Everything is vectorised over requests.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from router.runtime.operating_point import OperatingPoint, cumulative_shares

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
NEVER, ALWAYS = 2.0, -1.0


@dataclass(frozen=True, slots=True)
class CascadeInputs:
    """Per-request arrays for a ladder of K rungs (n requests).

    scores, cost_usd: (n, K). start_scores: (n, K-1), the pre-router's probabilities.
    verify: (n, K, K-1), verify[r, s, k] = escalation priority of rung k's answer when the
    cascade started at rung s (it sees the answers of rungs s..k-1); NaN where k < s or where the
    table has no answer (never escalates). The priority is the verifier's probability over the
    prompt's relative top-rung cost.
    """

    scores: FloatArray
    cost_usd: FloatArray
    start_scores: FloatArray
    verify: FloatArray

    def subset(self, idx: Sequence[int] | IntArray) -> CascadeInputs:
        """The same arrays for the requests `idx` (a bootstrap sample or a split)."""
        pick = np.asarray(idx, dtype=np.int64)
        return CascadeInputs(self.scores[pick], self.cost_usd[pick], self.start_scores[pick], self.verify[pick])


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


def _run(
    inputs: CascadeInputs, start: IntArray, taus: tuple[float, ...]
) -> tuple[FloatArray, FloatArray, IntArray, FloatArray]:
    """Per request: quality served, cost paid, rung served; and the share of requests calling each rung."""
    n, k_total = inputs.scores.shape
    rows = np.arange(n)
    served = np.full(n, -1, dtype=np.int64)
    cost = np.zeros(n)
    called = np.zeros(k_total)
    for k in range(k_total):
        active = (start <= k) & (served < 0)
        cost += np.where(active, inputs.cost_usd[:, k], 0.0)
        called[k] = active.mean() if n else 0.0
        if k == k_total - 1:
            served = np.where(active, k, served)
            break
        prob = inputs.verify[rows, start, k]
        accept = active & ~(prob > taus[k])
        served = np.where(accept, k, served)
    return inputs.scores[rows, served], cost, served, called


def _result(
    inputs: CascadeInputs, quality: float, cost: float, served: FloatArray, called: FloatArray
) -> CascadeResult:
    n = max(len(inputs.scores), 1)
    top_quality = float(inputs.scores[:, -1].sum()) / n
    top_cost = float(inputs.cost_usd[:, -1].sum())
    return CascadeResult(
        quality=quality,
        cost_usd=cost,
        quality_ratio=quality / top_quality if top_quality > 0 else float("nan"),
        cost_ratio=cost / top_cost if top_cost > 0 else float("nan"),
        served_share=tuple(float(x) for x in served),
        called_share=tuple(float(c) for c in called),
    )


def simulate(inputs: CascadeInputs, point: OperatingPoint) -> CascadeResult:
    """Quality and cost of the cascade at one operating point, relative to always-top.

    A start mix is replayed as its expectation: every request once from each start rung, weighted
    by that rung's share (the live gateway draws the start by a hash of the prompt instead).
    """
    n, k_total = inputs.scores.shape
    # Start -1: by the pre-router's thresholds.
    starts = [(s, w) for s, w in enumerate(point.start_mix) if w > 0] if point.mixes else [(-1, 1.0)]
    quality = cost = 0.0
    served_share = np.zeros(k_total)
    called = np.zeros(k_total)
    for s, weight in starts:
        start = np.full(n, s, dtype=np.int64) if s >= 0 else start_rungs(inputs.start_scores, point.start_thresholds)
        q, c, served, call = _run(inputs, start, point.verify_thresholds)
        quality += weight * float(q.mean()) if n else 0.0
        cost += weight * float(c.sum())
        served_share += weight * np.bincount(served, minlength=k_total)[:k_total] / max(n, 1)
        called += weight * call
    return _result(inputs, quality, cost, served_share, called)


def _grid(values: FloatArray, steps: int) -> list[float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [NEVER]
    qs = np.quantile(finite, np.linspace(0.0, 1.0, steps))
    # -1 escalates everything, 2 nothing; quantiles in between.
    return sorted({ALWAYS, NEVER, *(float(q) for q in qs)})


def cheapest_mix(
    quality: Sequence[float], cost: Sequence[float], target: float
) -> tuple[tuple[float, ...], float, float] | None:
    """The cheapest mix (share per option) of options with these mean quality and cost reaching `target`.

    Mixing is linear, so the optimum uses one option or two (the lower convex hull). Returns the
    shares, the mix's quality and cost, or None when no option reaches the target.
    """
    k = len(quality)
    best: tuple[tuple[float, ...], float, float] | None = None

    def consider(shares: list[float]) -> None:
        nonlocal best
        q = sum(w * x for w, x in zip(shares, quality, strict=True))
        c = sum(w * x for w, x in zip(shares, cost, strict=True))
        if q >= target - 1e-12 and (best is None or c < best[2] - 1e-15):
            best = (tuple(shares), q, c)

    for a in range(k):
        consider([1.0 if i == a else 0.0 for i in range(k)])
    for a, b in itertools.combinations(range(k), 2):
        lo, hi = (a, b) if quality[a] <= quality[b] else (b, a)
        if quality[lo] < target <= quality[hi]:
            w = (target - quality[lo]) / (quality[hi] - quality[lo])
            shares = [0.0] * k
            shares[lo], shares[hi] = 1.0 - w, w
            consider(shares)
    return best


def best_mix_cost_ratio(scores: FloatArray, cost_usd: FloatArray, quality_ratio: float) -> float | None:
    """Cost / always-top of the cheapest fixed random mix of rungs reaching `quality_ratio` of always-top.

    A target above every rung's own quality is capped at the best rung's (no mix does better).
    """
    top_q = float(scores[:, -1].mean())
    top_c = float(cost_usd[:, -1].sum())
    if top_q <= 0 or top_c <= 0 or not np.isfinite(quality_ratio):
        return None
    q = [float(x) / top_q for x in scores.mean(axis=0)]
    c = [float(x) / top_c for x in cost_usd.sum(axis=0)]
    found = cheapest_mix(q, c, min(quality_ratio, max(q)))
    return None if found is None else found[2]


def _mix_candidates(
    inputs: CascadeInputs, taus: tuple[float, ...], target: float
) -> tuple[OperatingPoint, CascadeResult] | None:
    """Cheapest start mix reaching `target` with these verifier thresholds."""
    k_total = inputs.scores.shape[1]
    per_start = []
    for s in range(k_total):
        point = OperatingPoint(
            tuple([NEVER] * (k_total - 1)), taus, tuple(1.0 if i == s else 0.0 for i in range(k_total))
        )
        per_start.append(simulate(inputs, point))
    found = cheapest_mix([r.quality_ratio for r in per_start], [r.cost_ratio for r in per_start], target)
    if found is None:
        return None
    shares = tuple(round(w, 6) for w in found[0])
    point = OperatingPoint(cumulative_shares(shares), taus, shares)
    return point, simulate(inputs, point)


def choose_operating_point(
    inputs: CascadeInputs,
    target_quality_ratio: float = 0.95,
    max_cost_ratio: float | None = None,
    steps: int = 21,
) -> tuple[OperatingPoint, CascadeResult]:
    """Cheapest point reaching the quality target (else, with a cost cap, the best quality under it).

    Searched: start by the pre-router (a shared start threshold, 2.0 = always the cheapest rung) or
    by a start mix (per verifier setting, the cheapest mix of start rungs), times per-rung verifier
    thresholds on quantiles of that rung's priorities. The search includes the plain fixed mixes
    (verifier never escalating), so on `inputs` the point found costs no more than the best mix.
    """
    k_minus_1 = inputs.start_scores.shape[1]
    start_grid = [NEVER, *_grid(inputs.start_scores[:, 0], 8)[1:-1]]
    verify_grids = [_grid(inputs.verify[:, :, k].ravel(), steps) for k in range(k_minus_1)]
    best_meeting: tuple[OperatingPoint, CascadeResult] | None = None
    best_capped: tuple[OperatingPoint, CascadeResult] | None = None

    def consider(point: OperatingPoint, result: CascadeResult) -> None:
        nonlocal best_meeting, best_capped
        if result.quality_ratio >= target_quality_ratio - 1e-12 and (
            best_meeting is None or result.cost_ratio < best_meeting[1].cost_ratio - 1e-12
        ):
            best_meeting = (point, result)
        if (
            max_cost_ratio is not None
            and result.cost_ratio <= max_cost_ratio
            and (best_capped is None or result.quality_ratio > best_capped[1].quality_ratio)
        ):
            best_capped = (point, result)

    for taus in itertools.product(*verify_grids):
        for start_t in start_grid:
            point = OperatingPoint(tuple([start_t] * k_minus_1), tuple(taus))
            consider(point, simulate(inputs, point))
        mixed = _mix_candidates(inputs, tuple(taus), target_quality_ratio)
        if mixed is not None:
            consider(*mixed)
    if best_meeting is not None and (max_cost_ratio is None or best_meeting[1].cost_ratio <= max_cost_ratio):
        return best_meeting
    if best_capped is not None:
        return best_capped
    if best_meeting is not None:
        return best_meeting
    always_top = OperatingPoint(tuple([ALWAYS] * k_minus_1), tuple([ALWAYS] * k_minus_1))
    return always_top, simulate(inputs, always_top)
