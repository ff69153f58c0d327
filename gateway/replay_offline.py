"""The replayed policy computed offline: same profile, scorer, verifier and cascade runner, no processes.

`tiergate replay` reports these numbers beside the live ones. Where no latency budget binds (no
queue, every estimate within budget) the two must agree: the live gateway adds only timing. A
gap then points at the serving path (a lost answer, a tier answered by the wrong model, cost
headers that do not add up), not at the router. Costs use the live rule: (prompt + completion
tokens) x the tier's price, with tokens counted as the replay tiers count them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from deployments.profile import Profile
from gateway.cascade import TierAnswer, run_cascade
from gateway.replay_tier import token_count
from router.offline.outcomes import OutcomeRow
from router.runtime.policy import RoutingRequest, decide
from router.runtime.slo import Estimate


def offline_ratios(
    profile: Profile,
    rows: Sequence[OutcomeRow],
    tier_models: Mapping[str, str],
    usd_per_token: Mapping[str, float],
) -> dict[str, Any]:
    """Quality and cost of the profile's policy on `rows`, relative to always using the last tier."""
    return asyncio.run(_offline(profile, rows, tier_models, usd_per_token))


async def _offline(
    profile: Profile,
    rows: Sequence[OutcomeRow],
    tier_models: Mapping[str, str],
    usd_per_token: Mapping[str, float],
) -> dict[str, Any]:
    # Imported here: the learned artifact (scikit-learn, skops) loads only when a replay asks.
    from gateway.routing import policy_config
    from gateway.state import load_router

    parts = load_router(profile)
    config = policy_config(profile, parts.start_thresholds)
    cascade = profile.routing.cascade
    top = profile.tiers[-1].name
    quality = cost = top_quality = top_cost = 0.0
    escalated = 0
    for row in rows:
        prompt_tokens = token_count(row.prompt)

        async def recorded(tier: str, row: OutcomeRow = row, prompt_tokens: int = prompt_tokens) -> TierAnswer:
            # What the replay tier would send back, without the HTTP: the recorded answer and its price.
            text = row.responses[tier_models[tier]]
            completion = token_count(text)
            price = (prompt_tokens + completion) * usd_per_token[tier]
            return TierAnswer(tier, {}, text, None, prompt_tokens, completion, price, 0.0)

        decision = decide(RoutingRequest(text=row.prompt, latency_class="batch"), config, parts.scorer)
        if parts.judge is not None and cascade.enabled:
            # The live runner itself, with no budget: offline differs from live only by timing.
            outcome = await run_cascade(
                row.prompt,
                decision.ladder,
                recorded,
                parts.judge,
                max_escalations=cascade.max_escalations,
                budget=None,
                estimate=lambda _: Estimate(0.0, 0.0),
                started=0.0,
            )
            assert outcome.answer is not None
            served, spent, climbed = outcome.answer.tier, outcome.cost_usd, bool(outcome.escalations)
        else:
            answer = await recorded(decision.tier)
            served, spent, climbed = answer.tier, answer.cost_usd, False
        cost += spent
        escalated += climbed
        quality += row.scores[tier_models[served]]
        top_quality += row.scores[tier_models[top]]
        top_cost += (await recorded(top)).cost_usd
    n = max(len(rows), 1)
    return {
        "offline_quality_ratio": quality / top_quality if top_quality > 0 else 0.0,
        "offline_cost_ratio": cost / top_cost if top_cost > 0 else 0.0,
        "offline_escalation_rate": escalated / n,
    }
