"""A request's latency budget: its own headers first, then its latency class's defaults."""

from __future__ import annotations

import math
from collections.abc import Mapping

from deployments.profile import LatencyClass, RoutingSpec
from gateway.errors import InvalidRequest
from router.runtime.slo import Budget

SLO_TTFT_HEADER = "x-tiergate-slo-ttft-ms"
SLO_TOTAL_HEADER = "x-tiergate-slo-total-ms"
# A budget past an hour is a typo more often than a wish; refuse it rather than plan around it.
MAX_BUDGET_MS = 3_600_000.0


def _header_ms(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.0 < value <= MAX_BUDGET_MS):
        raise InvalidRequest(f"{name} must be a number of milliseconds in (0, {MAX_BUDGET_MS:.0f}].", param=name)
    return value


def request_budget(
    headers: Mapping[str, str], latency_class: LatencyClass, routing: RoutingSpec, *, sent_whole: bool
) -> Budget:
    """The budget this request is held to (ms); headers override the class's profile values.

    `sent_whole`: the caller gets nothing before the last token (not streamed, or a buffered
    stream), so its first token arrives with the whole answer and the first-token budget bounds
    the total.
    """
    spec = routing.latency_classes[latency_class]
    ttft = _header_ms(headers, SLO_TTFT_HEADER)
    total = _header_ms(headers, SLO_TOTAL_HEADER)
    ttft = ttft if ttft is not None else spec.ttft_budget_ms
    total = total if total is not None else spec.budget_ms
    if sent_whole and ttft is not None:
        return Budget(ttft_ms=None, total_ms=ttft if total is None else min(ttft, total))
    return Budget(ttft_ms=ttft, total_ms=total)
