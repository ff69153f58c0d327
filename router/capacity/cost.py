"""Cost: the monthly formula of docs/strategy.md, the reserved cost beside it, USD per million tokens.

That formula, price x GPUs x hours x utilization, is the cost of GPUs billed only while in
use (autoscaled, per-second billing): $1.2/h x 1 x 720 h x 0.6 = $518.40 and
$4.0/h x 2 x 720 h x 0.8 = $4,608. GPUs reserved for the month cost price x GPUs x hours
whatever the load ($864 and $5,760 for those two). Tokens produced = aggregate decode rate x
busy seconds, so with usage billing the price per token does not depend on utilization, while
with reservation it grows as 1 / utilization; both are reported.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.errors import ConfigError

HOURS_PER_MONTH = 720.0  # docs/strategy.md's month: 30 days x 24 h


@dataclass(frozen=True, slots=True)
class Cost:
    monthly_cost_usd: float
    monthly_cost_reserved_usd: float
    usd_per_million_tokens: float | None  # None when nothing is produced
    usd_per_million_tokens_reserved: float | None


def monthly_cost_usd(price_per_gpu_hour_usd: float, gpus: int, hours: float, utilization: float) -> float:
    """docs/strategy.md's formula: price x GPUs x hours x utilization."""
    return price_per_gpu_hour_usd * gpus * hours * utilization


def cost(
    price_per_gpu_hour_usd: float,
    gpus: int,
    hours: float,
    utilization: float,
    tokens_per_s_aggregate: float,
) -> Cost:
    """Monthly cost (used and reserved) and USD per million output tokens at `utilization`."""
    if not 0.0 <= utilization <= 1.0:
        raise ConfigError("utilization must lie in [0, 1]")
    used = monthly_cost_usd(price_per_gpu_hour_usd, gpus, hours, utilization)
    reserved = price_per_gpu_hour_usd * gpus * hours
    tokens = tokens_per_s_aggregate * 3600.0 * hours * utilization
    per_m = used / tokens * 1e6 if tokens > 0 else None
    per_m_reserved = reserved / tokens * 1e6 if tokens > 0 else None
    return Cost(used, reserved, per_m, per_m_reserved)
