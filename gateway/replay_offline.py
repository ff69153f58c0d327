"""The replayed policy computed offline: same profile, same scorer, verifier and rules, no processes.

`tiergate replay` reports these numbers beside the live ones. Where no latency budget binds (no
queue, every estimate within budget) the two must agree: the live gateway adds only timing. A
gap then points at the serving path (a lost answer, a tier answered by the wrong model, cost
headers that do not add up), not at the router. Costs use the live rule: (prompt + completion
tokens) x the tier's price, with tokens counted as the replay tiers count them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from deployments.profile import Profile
from gateway.replay_tier import token_count
from router.offline.outcomes import OutcomeRow
from router.runtime.cascade import Attempt, best_attempt, next_step
from router.runtime.policy import RoutingRequest, decide


def offline_ratios(
    profile: Profile,
    rows: Sequence[OutcomeRow],
    tier_models: Mapping[str, str],
    usd_per_token: Mapping[str, float],
) -> dict[str, Any]:
    """Quality and cost of the profile's policy on `rows`, relative to always using the last tier."""
    # Imported here: the learned artifact (scikit-learn, skops) loads only when a replay asks.
    from gateway.service import policy_config
    from gateway.state import load_router

    parts = load_router(profile)
    config = policy_config(profile, parts.start_thresholds)
    cascade = profile.routing.cascade
    names = [t.name for t in profile.tiers]
    top = names[-1]
    quality = cost = top_quality = top_cost = 0.0
    escalated = 0
    for row in rows:
        decision = decide(RoutingRequest(text=row.prompt, latency_class="batch"), config, parts.scorer)
        ladder = decision.ladder if parts.judge is not None and cascade.enabled else (decision.tier,)
        prompt_tokens = token_count(row.prompt)

        def answer(tier: str, row: OutcomeRow = row) -> str:
            return row.responses[tier_models[tier]]

        def price(tier: str, row: OutcomeRow = row, prompt_tokens: int = prompt_tokens) -> float:
            return (prompt_tokens + token_count(answer(tier))) * usd_per_token[tier]

        attempts: list[Attempt] = []
        tier = ladder[0]
        while True:
            cost += price(tier)
            is_top = ladder.index(tier) == len(ladder) - 1
            judgement = None
            if not is_top and parts.judge is not None:
                previous = [answer(a.tier) for a in attempts]
                judgement = parts.judge.judge(tier, row.prompt, answer(tier), None, previous)
            attempts.append(Attempt(tier, judgement))
            step = next_step(
                ladder, attempts, max_escalations=cascade.max_escalations, budget=None, spent_ms=0.0, next_estimate=None
            )
            if step.action == "escalate" and step.next_tier is not None:
                tier = step.next_tier
                escalated += 1 if len(attempts) == 1 else 0
                continue
            served = attempts[-1 if step.action == "accept" else best_attempt(attempts)].tier
            break
        quality += row.scores[tier_models[served]]
        top_quality += row.scores[tier_models[top]]
        top_cost += price(top)
    n = max(len(rows), 1)
    return {
        "offline_quality_ratio": quality / top_quality if top_quality > 0 else 0.0,
        "offline_cost_ratio": cost / top_cost if top_cost > 0 else 0.0,
        "offline_escalation_rate": escalated / n,
    }
