"""Prometheus metrics under the `tiergate_` prefix, in a registry owned by each app instance.

A per-app registry (not the global default) lets tests build many apps in one process. Label
children are cached per tier so the hot path does one dict lookup, not a label resolution.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric

# Seconds. Gateway overhead lives in the sub-millisecond range; tiers in the 10 ms - 60 s range.
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Registry(CollectorRegistry):
    """A registry that leaves the *_created series out of its exposition.

    They double its size and no dashboard of ours reads them. prometheus_client's own switch
    (disable_created_metrics) is process-wide, which would change every other registry in an
    embedding process; filtering here touches only the gateway's, at scrape time only.
    """

    def collect(self) -> Iterator[Metric]:
        for metric in super().collect():
            created = metric.name + "_created"
            metric.samples = [s for s in metric.samples if s.name != created]
            yield metric


class AdmissionView(Protocol):
    @property
    def queue_depth(self) -> int: ...

    in_flight_tokens: int
    capacity_tokens: int | None


@dataclass(slots=True)
class _TierChildren:
    e2e: Histogram
    ttft: Histogram
    overhead: Histogram
    prompt_tokens: Counter
    completion_tokens: Counter


class GatewayMetrics:
    def __init__(self, tier_names: list[str], router_version: str, policy: str) -> None:
        self.registry = _Registry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tiergate_requests", "Chat requests by tier and HTTP status.", ["tier", "status"], registry=r
        )
        self.e2e = Histogram(
            "tiergate_request_duration_seconds",
            "End-to-end request latency as the gateway saw it.",
            ["tier"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tiergate_time_to_first_token_seconds",
            "Time to the first token (streaming) or to the whole answer (non-streaming).",
            ["tier"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "tiergate_gateway_overhead_seconds",
            "Time spent in the gateway itself, excluding the time waiting on the tier.",
            ["tier"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "tiergate_tokens",
            "Tokens by tier and direction (prompt, completion).",
            ["tier", "direction"],
            registry=r,
        )
        self.routing = Counter(
            "tiergate_routing_decisions",
            "Routing decisions for model=auto by chosen tier and reason.",
            ["tier", "reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "tiergate_upstream_errors", "Tier faults by tier and kind.", ["tier", "kind"], registry=r
        )
        self.tier_ready = Gauge("tiergate_tier_ready", "1 when the tier's last probe succeeded.", ["tier"], registry=r)
        self.router_info = Gauge(
            "tiergate_router_info",
            "The routing policy and scorer version in use.",
            ["policy", "version"],
            registry=r,
        )
        self.router_info.labels(policy=policy, version=router_version).set(1)
        self.in_flight = Gauge("tiergate_in_flight_requests", "Requests being served now.", registry=r)
        self.admission_queue = Gauge(
            "tiergate_admission_queue_depth", "Requests waiting for a tier's KV budget.", ["tier"], registry=r
        )
        self.admission_tokens = Gauge(
            "tiergate_admission_in_flight_tokens", "KV tokens held by admitted requests.", ["tier"], registry=r
        )
        self.admission_capacity = Gauge(
            "tiergate_admission_capacity_tokens", "KV tokens the tier may hold (0: unbounded).", ["tier"], registry=r
        )
        self.admission_rejections = Counter(
            "tiergate_admission_rejections",
            "Requests refused (or sent to another tier) because a tier was at capacity.",
            ["tier", "outcome"],
            registry=r,
        )
        self.slo = Counter(
            "tiergate_slo_requests",
            "Requests that met or missed their latency budget, by latency class.",
            ["latency_class", "result"],
            registry=r,
        )
        self.escalations = Counter(
            "tiergate_escalations",
            "Cascade climbs from one tier to the next, by reason.",
            ["from_tier", "to_tier", "reason"],
            registry=r,
        )
        self.cost = Counter(
            "tiergate_cost_usd",
            "USD spent on tier calls (every attempt, answered or escalated past), by tier.",
            ["tier"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "tiergate_breaker_state",
            "Each tier's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["tier"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "tiergate_breaker_transitions",
            "Circuit breaker changes, by tier and the state entered.",
            ["tier", "state"],
            registry=r,
        )
        self.retries = Counter(
            "tiergate_retries",
            "Tier calls tried again, by tier and the fault retried (connect, timeout, status_429, status_5xx, broken).",
            ["tier", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "tiergate_fallbacks",
            "Requests handed to another tier before their first byte because a tier failed or its breaker was open.",
            ["from_tier", "to_tier"],
            registry=r,
        )
        self._children = {
            name: _TierChildren(
                e2e=self.e2e.labels(name),
                ttft=self.ttft.labels(name),
                overhead=self.overhead.labels(name),
                prompt_tokens=self.tokens.labels(name, "prompt"),
                completion_tokens=self.tokens.labels(name, "completion"),
            )
            for name in tier_names
        }
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._routing_children: dict[tuple[str, str], Counter] = {}
        # Children looked up once: labels() costs a lock and a dict build on every call.
        self._cost_children: dict[str, Counter] = {}
        self._slo_children: dict[tuple[str, str], Counter] = {}
        for name in tier_names:
            self.tier_ready.labels(name).set(0)
            self.breaker_state.labels(name).set(0)

    def breaker_changed(self, tier: str, value: int, state: str) -> None:
        self.breaker_state.labels(tier).set(value)
        self.breaker_transitions.labels(tier, state).inc()

    def routed(self, tier: str, reason: str) -> None:
        counter = self._routing_children.get((tier, reason))
        if counter is None:
            counter = self._routing_children[(tier, reason)] = self.routing.labels(tier, reason)
        counter.inc()

    def attempt(self, tier: str, prompt_tokens: int, completion_tokens: int, cost_usd: float) -> None:
        """One tier call's tokens and cost, for an attempt whose answer was not the one returned."""
        children = self._children.get(tier)
        if children is not None:
            if prompt_tokens:
                children.prompt_tokens.inc(prompt_tokens)
            if completion_tokens:
                children.completion_tokens.inc(completion_tokens)
        self.spent(tier, cost_usd)

    def spent(self, tier: str, cost_usd: float) -> None:
        if cost_usd > 0:
            child = self._cost_children.get(tier)
            if child is None:
                child = self._cost_children[tier] = self.cost.labels(tier)
            child.inc(cost_usd)

    def slo_result(self, latency_class: str, result: str) -> None:
        key = (latency_class, result)
        child = self._slo_children.get(key)
        if child is None:
            child = self._slo_children[key] = self.slo.labels(latency_class, result)
        child.inc()

    def watch_admission(self, tier: str, gate: AdmissionView) -> None:
        """Gauges read the gate's live numbers at scrape time, so the hot path updates nothing."""
        self.admission_queue.labels(tier).set_function(lambda: gate.queue_depth)
        self.admission_tokens.labels(tier).set_function(lambda: gate.in_flight_tokens)
        self.admission_capacity.labels(tier).set(gate.capacity_tokens or 0)

    def observe(
        self,
        tier: str | None,
        status: int,
        *,
        total_s: float,
        ttft_s: float | None,
        overhead_s: float,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        key = (tier or "none", status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(key[0], str(status))
        counter.inc()
        children = self._children.get(tier) if tier else None
        if children is None:
            return
        children.e2e.observe(total_s)
        children.overhead.observe(overhead_s)
        if ttft_s is not None:
            children.ttft.observe(ttft_s)
        if prompt_tokens:
            children.prompt_tokens.inc(prompt_tokens)
        if completion_tokens:
            children.completion_tokens.inc(completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
