"""Replay a routing + cascade policy over outcome tables and pick its operating point.

The policy: the start rung comes from the pre-router (the first rung whose prompt score, or score
per relative top-rung cost, is under its start threshold, else the top) or from a fixed start mix
(a share of requests per rung); each
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
# Verifier thresholds that never / always escalate. A priority is a probability over a relative
# cost clipped to [0.05, 20], so it can reach 20: "never" must lie above that.
NEVER, ALWAYS = 1e6, -1.0


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
    # Estimated top-rung cost of each prompt over a typical one's (the cost model's; None: all 1).
    relative_cost: FloatArray | None = None

    def subset(self, idx: Sequence[int] | IntArray) -> CascadeInputs:
        """The same arrays for the requests `idx` (a bootstrap sample or a split)."""
        pick = np.asarray(idx, dtype=np.int64)
        relative = None if self.relative_cost is None else self.relative_cost[pick]
        return CascadeInputs(
            self.scores[pick], self.cost_usd[pick], self.start_scores[pick], self.verify[pick], relative
        )

    def start_per_cost(self) -> FloatArray:
        """Start scores per relative top-rung cost (what a point with `start_per_cost` compares)."""
        if self.relative_cost is None:
            return self.start_scores
        return self.start_scores / self.relative_cost[:, None]


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
        by = inputs.start_per_cost() if point.start_per_cost else inputs.start_scores
        start = np.full(n, s, dtype=np.int64) if s >= 0 else start_rungs(by, point.start_thresholds)
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
    # ALWAYS escalates everything, NEVER nothing; quantiles in between.
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


class _Judge:
    """Does a policy's per-request quality reach the target? On the mean, or robustly: in
    `confidence` of bootstrap resamples of the requests (a point chosen on a small sample
    otherwise lands under the target on new traffic about half the time)."""

    def __init__(self, inputs: CascadeInputs, target: float, resamples: int, confidence: float, seed: int) -> None:
        n = len(inputs.scores)
        self.target = target
        self.top = inputs.scores[:, -1]
        self.top_cost = float(inputs.cost_usd[:, -1].sum())
        self.weights: FloatArray | None = None
        self.quantile = 1.0 - confidence
        if resamples > 0 and n > 0:
            rng = np.random.default_rng(seed)
            self.weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
            self.top_resampled = np.maximum(self.weights @ self.top, 1e-12)

    def reaches(self, quality: FloatArray) -> bool:
        top = float(self.top.sum())
        if top <= 0:
            return True
        if self.weights is None:
            return float(quality.sum()) / top >= self.target - 1e-12
        ratios = (self.weights @ quality) / self.top_resampled
        return float(np.quantile(ratios, self.quantile)) >= self.target - 1e-12

    def cost_ratio(self, cost: FloatArray) -> float:
        return float(cost.sum()) / self.top_cost if self.top_cost > 0 else float("nan")


def choose_operating_point(
    inputs: CascadeInputs,
    target_quality_ratio: float = 0.95,
    max_cost_ratio: float | None = None,
    steps: int = 21,
    *,
    resamples: int = 0,
    confidence: float = 0.8,
    seed: int = 7,
    prompt_start: bool = True,
) -> tuple[OperatingPoint, CascadeResult]:
    """Cheapest point reaching the quality target (else, with a cost cap, the best quality under it).

    Searched: start by the pre-router (a shared start threshold, NEVER = always the cheapest rung) or
    by a start mix (two start rungs, shares in steps of 5%), times per-rung verifier thresholds on
    quantiles of that rung's priorities. The search includes the plain fixed mixes (verifier never
    escalating), so on `inputs` the point found costs no more than the best mix. With `resamples`,
    "reaching the target" means in `confidence` of bootstrap resamples of `inputs`. Without
    `prompt_start` the pre-router is left out (fewer choices to over-fit a small sample with).
    """
    n, k_total = inputs.scores.shape
    k_minus_1 = k_total - 1
    judge = _Judge(inputs, target_quality_ratio, resamples, confidence, seed)
    start_grid = [NEVER, *_grid(inputs.start_scores[:, 0], 8)[1:-1]] if prompt_start else []
    verify_grids = [_grid(inputs.verify[:, :, k].ravel(), steps) for k in range(k_minus_1)]
    best: tuple[float, OperatingPoint] | None = None
    capped: tuple[float, OperatingPoint] | None = None
    shares = np.linspace(0.0, 1.0, 21)

    def consider(point: OperatingPoint, quality: FloatArray, cost: FloatArray) -> None:
        nonlocal best, capped
        ratio = judge.cost_ratio(cost)
        if judge.reaches(quality) and (best is None or ratio < best[0] - 1e-12):
            best = (ratio, point)
        if max_cost_ratio is not None and ratio <= max_cost_ratio:
            q = float(quality.mean()) if n else 0.0
            if capped is None or q > capped[0]:
                capped = (q, point)

    for taus_list in itertools.product(*verify_grids):
        taus = tuple(taus_list)
        for start_t in start_grid:
            point = OperatingPoint(tuple([start_t] * k_minus_1), taus)
            q, c, _, _ = _run(inputs, start_rungs(inputs.start_scores, point.start_thresholds), taus)
            consider(point, q, c)
        fixed = [_run(inputs, np.full(n, s, dtype=np.int64), taus)[:2] for s in range(k_total)]
        for a, b in itertools.combinations(range(k_total), 2):
            for w in shares:
                mix = [0.0] * k_total
                mix[a], mix[b] = 1.0 - float(w), float(w)
                mix_t = tuple(round(x, 6) for x in mix)
                point = OperatingPoint(cumulative_shares(mix_t), taus, mix_t)
                consider(point, (1 - w) * fixed[a][0] + w * fixed[b][0], (1 - w) * fixed[a][1] + w * fixed[b][1])
    chosen: OperatingPoint
    if best is not None and (max_cost_ratio is None or best[0] <= max_cost_ratio):
        chosen = best[1]
    elif capped is not None:
        chosen = capped[1]
    elif best is not None:
        chosen = best[1]
    else:
        chosen = OperatingPoint(tuple([ALWAYS] * k_minus_1), tuple([ALWAYS] * k_minus_1))
    return chosen, simulate(inputs, chosen)


def always_top(k_total: int) -> OperatingPoint:
    """Every request to the top rung: the start mix all on it, no verifier (what a search falls back to)."""
    top = tuple(0.0 if i < k_total - 1 else 1.0 for i in range(k_total))
    return OperatingPoint(cumulative_shares(top), tuple([NEVER] * (k_total - 1)), top)


def choose_agreement_point(
    inputs: CascadeInputs,
    target_quality_ratio: float = 0.95,
    steps: int = 21,
    *,
    resamples: int = 0,
    confidence: float = 0.8,
    seed: int = 7,
) -> tuple[OperatingPoint, CascadeResult]:
    """Cheapest point of the one-decision cascade reaching the target (judged as `choose_operating_point`).

    Every cheaper rung answers and the request climbs to the last rung below the top; only there does
    the verifier decide, once, seeing all the cheaper rungs' answers (agreement between final answers
    is the one answer signal that transfers to traffic the verifier was not trained on). A share of
    requests starts at the top instead, which moves quality towards the target in small steps. Two
    numbers to place (the threshold on quantiles of the deciding rung's priorities and the top share):
    few enough that a sample of a couple of hundred rows places them without fitting its noise, which
    the full search over every rung's threshold and start mix did not (docs/router.md). Falls back to
    always-top when nothing reaches the target.
    """
    n, k_total = inputs.scores.shape
    last = k_total - 2
    judge = _Judge(inputs, target_quality_ratio, resamples, confidence, seed)
    start = np.zeros(n, dtype=np.int64)
    top_quality, top_cost = inputs.scores[:, -1], inputs.cost_usd[:, -1]
    best: tuple[float, OperatingPoint] | None = None
    for tau in _grid(inputs.verify[:, 0, last], steps):
        taus = tuple([ALWAYS] * last + [tau])
        quality, cost, _, _ = _run(inputs, start, taus)
        for w in np.linspace(0.0, 1.0, 21):
            ratio = judge.cost_ratio((1 - w) * cost + w * top_cost)
            if (best is None or ratio < best[0] - 1e-12) and judge.reaches((1 - w) * quality + w * top_quality):
                mix = tuple(round(x, 6) for x in [1.0 - float(w), *([0.0] * (k_total - 2)), float(w)])
                best = (ratio, OperatingPoint(cumulative_shares(mix), taus, mix))
    point = best[1] if best is not None else always_top(k_total)
    return point, simulate(inputs, point)


def choose_prompt_point(
    inputs: CascadeInputs,
    target_quality_ratio: float = 0.95,
    steps: int = 21,
    *,
    resamples: int = 0,
    confidence: float = 0.8,
    seed: int = 7,
) -> tuple[OperatingPoint, CascadeResult]:
    """Cheapest pre-router point reaching the target: one cheap rung, one threshold on its start score.

    A request starts at rung b when its score for b (P(b is not good enough | prompt) per relative
    top-rung cost: gain per dollar) is under the threshold, else at the top; its answer is final (no
    verifier: this is the policy a sample without answers can place). Searched over b and thresholds
    on quantiles of b's scores, judged as `choose_operating_point` judges. Falls back to always-top
    when nothing reaches the target.
    """
    k_total = inputs.scores.shape[1]
    judge = _Judge(inputs, target_quality_ratio, resamples, confidence, seed)
    never = tuple([NEVER] * (k_total - 1))
    by = inputs.start_per_cost()
    best: tuple[float, OperatingPoint] | None = None
    for rung in range(k_total - 1):
        for t in _grid(by[:, rung], steps):
            # -1.0: no score is under it, so the other cheap rungs are never a start.
            thresholds = tuple(t if k == rung else -1.0 for k in range(k_total - 1))
            quality, cost, _, _ = _run(inputs, start_rungs(by, thresholds), never)
            ratio = judge.cost_ratio(cost)
            if (best is None or ratio < best[0] - 1e-12) and judge.reaches(quality):
                best = (ratio, OperatingPoint(thresholds, never, start_per_cost=True))
    point = best[1] if best is not None else always_top(k_total)
    return point, simulate(inputs, point)


def cheapest_fixed_mix(
    inputs: CascadeInputs, target_quality_ratio: float, *, resamples: int = 0, confidence: float = 0.8, seed: int = 7
) -> tuple[OperatingPoint, CascadeResult]:
    """The cheapest fixed mix of tiers (start shares, never escalating) reaching the target, judged as
    `choose_operating_point` judges (falls back to always-top)."""
    n, k_total = inputs.scores.shape
    judge = _Judge(inputs, target_quality_ratio, resamples, confidence, seed)
    never = tuple([NEVER] * (k_total - 1))
    best: tuple[float, OperatingPoint] | None = None
    rows = np.arange(n)
    for a, b in itertools.combinations(range(k_total), 2):
        for w in np.linspace(0.0, 1.0, 41):
            mix = [0.0] * k_total
            mix[a], mix[b] = 1.0 - float(w), float(w)
            quality = (1 - w) * inputs.scores[rows, a] + w * inputs.scores[rows, b]
            cost = (1 - w) * inputs.cost_usd[rows, a] + w * inputs.cost_usd[rows, b]
            ratio = judge.cost_ratio(cost)
            if judge.reaches(quality) and (best is None or ratio < best[0] - 1e-12):
                mix_t = tuple(round(x, 6) for x in mix)
                best = (ratio, OperatingPoint(cumulative_shares(mix_t), never, mix_t))
    point = best[1] if best is not None else always_top(k_total)
    return point, simulate(inputs, point)
