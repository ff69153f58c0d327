"""Routing policy: scores + the caller's latency class + tier state -> which tier answers.

The interface is small on purpose. A `Scorer` turns a request into one probability per rung
("tier i is not good enough"); a `Policy` turns those into a `Decision`. The rule scorer below
is the strategy note's heuristic; the learned scorer (router/scoring) implements the same
protocol, so swapping them changes nothing else.

The note's own rule ("complexity < 0.3 and latency < 100 ms -> 1B; < 0.7 and < 1 s -> 7B; else
70B") sends every relaxed-latency request to the largest tier, even trivial ones. tiergate reads
it the way the mission states it instead: quality picks the cheapest tier likely to answer well,
and the latency class caps how large a tier may be used (realtime callers cannot wait for 70B).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from router.runtime.prompt_features import extract, heuristic_complexity
from router.runtime.slo import Budget, Estimate

LatencyClass = Literal["realtime", "interactive", "batch"]
"""How long a caller can wait; the one definition (the profile's schema imports it from here)."""
LATENCY_CLASSES: tuple[LatencyClass, ...] = ("realtime", "interactive", "batch")


@dataclass(frozen=True, slots=True)
class RoutingRequest:
    """What the policy sees of a request: text, shape and the caller's latency needs."""

    text: str
    turns: int = 1
    latency_class: LatencyClass = "interactive"
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Plain data built from the profile, so router/ never imports the profile schema."""

    tier_names: tuple[str, ...]
    thresholds: tuple[float, ...]
    # Index of the largest tier each class may use; absent or None means no cap.
    class_max_tier: dict[str, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tier_names:
            raise ValueError("a policy needs at least one tier")
        if len(self.thresholds) != len(self.tier_names) - 1:
            raise ValueError("thresholds must have one value per tier but the last")


@dataclass(frozen=True, slots=True)
class Decision:
    tier_index: int
    tier: str
    # Tiers a cascade may climb, starting with `tier`, cheapest first, within the class cap.
    ladder: tuple[str, ...]
    scores: tuple[float, ...]
    reason: str
    # True when no tier the scorer accepts is expected to meet the request's latency budget; the
    # fastest of them was chosen instead.
    slo_at_risk: bool = False


class Scorer(Protocol):
    """Request -> per-rung probabilities that tier i is not good enough (len = tiers - 1)."""

    @property
    def version(self) -> str: ...

    def scores(self, request: RoutingRequest, n_rungs: int) -> list[float]: ...


class HeuristicScorer:
    """The strategy note's 'complexity' as one number, used for every rung."""

    version = "heuristic-1"

    def scores(self, request: RoutingRequest, n_rungs: int) -> list[float]:
        complexity = heuristic_complexity(extract(request.text, request.turns))
        return [complexity] * n_rungs


def decide(
    request: RoutingRequest,
    config: PolicyConfig,
    scorer: Scorer,
    unavailable: frozenset[str] = frozenset(),
    *,
    estimates: Mapping[str, Estimate] | None = None,
    budget: Budget | None = None,
) -> Decision:
    """Pick the cheapest tier whose rung score is under its threshold, within the class cap.

    `unavailable` tiers (not ready, no capacity) are skipped upward first, then downward,
    so a request is only refused when no tier at all can take it.

    With `estimates` and a `budget`, the choice is the cheapest tier the scorer accepts (the one
    picked above or any larger one within the cap) whose estimate meets the budget; when none
    does, the fastest of them, with `slo_at_risk` set. Latency never moves a request below the
    tier the scorer asked for: a budget buys speed with money, not with quality.
    """
    n = len(config.tier_names)
    scores = scorer.scores(request, n - 1) if n > 1 else []
    choice = n - 1
    for i, (score, threshold) in enumerate(zip(scores, config.thresholds, strict=True)):
        if score < threshold:
            choice = i
            break
    reason = "score" if choice < n - 1 else "score-above-all-thresholds"
    cap = config.class_max_tier.get(request.latency_class)
    top = n - 1 if cap is None else min(cap, n - 1)
    if choice > top:
        choice, reason = top, f"capped-by-{request.latency_class}"
    wanted = choice
    found = _nearest_available(wanted, top, config.tier_names, unavailable)
    if found is None:
        # Everything within the cap is out: the caller still gets an answer from a larger tier.
        found = _nearest_available(top, n - 1, config.tier_names, unavailable)
        reason = "cap-overridden-all-capped-tiers-unavailable"
        if found is None:
            found, reason = wanted, "no-tier-available"
    elif found != wanted:
        reason = f"fallback-from-{config.tier_names[wanted]}"
    choice = found
    slo_at_risk = False
    if estimates is not None and budget is not None:
        choice, slo_reason, slo_at_risk = _meet_budget(choice, top, config.tier_names, unavailable, estimates, budget)
        if slo_reason is not None:
            reason = slo_reason
    ladder = tuple(name for name in config.tier_names[choice : max(top, choice) + 1] if name not in unavailable) or (
        config.tier_names[choice],
    )
    return Decision(
        tier_index=choice,
        tier=config.tier_names[choice],
        ladder=ladder,
        scores=tuple(scores),
        reason=reason,
        slo_at_risk=slo_at_risk,
    )


def _meet_budget(
    choice: int,
    top: int,
    names: Sequence[str],
    unavailable: frozenset[str],
    estimates: Mapping[str, Estimate],
    budget: Budget,
) -> tuple[int, str | None, bool]:
    """(tier index, reason if the budget changed the choice, at risk) among choice..top."""
    adequate = [i for i in range(choice, max(top, choice) + 1) if names[i] not in unavailable and names[i] in estimates]
    if not adequate:
        return choice, None, False
    for i in adequate:
        if budget.met_by(estimates[names[i]]):
            return i, (None if i == choice else f"slo-moved-up-from-{names[choice]}"), False

    def speed(i: int) -> float:
        e = estimates[names[i]]
        return e.total_ms if budget.total_ms is not None else e.ttft_ms

    fastest = min(adequate, key=speed)
    return fastest, "slo-fastest-adequate", True


def _nearest_available(start: int, top: int, names: Sequence[str], unavailable: frozenset[str]) -> int | None:
    for i in range(start, top + 1):
        if names[i] not in unavailable:
            return i
    for i in range(start - 1, -1, -1):
        if names[i] not in unavailable:
            return i
    return None
