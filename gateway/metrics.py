"""Prometheus metrics under the `tiergate_` prefix, right with one gateway process or N.

Two modes, chosen by prometheus-client itself from the environment when it is first imported:

- One process (one worker, tests, an embedding application): a registry owned by each app
  instance, so tests can build many apps in one process.
- N worker processes (`tiergate serve --workers N`, N > 1, sets `PROMETHEUS_MULTIPROC_DIR` to a
  fresh folder before any worker starts): every process writes its values to its own memory-mapped
  files there, and a scrape of any worker merges all of them (prometheus-client's multiprocess mode). Counters and
  histograms add up across workers, dead ones included, so totals never drop; each gauge names how
  its per-process values combine (`multiprocess_mode`), the `live*` modes forgetting a worker that
  has exited. Gauges must therefore be set, never computed at scrape time (`set_function` is not
  seen by the merge): admission gauges are copied from the gates by `refresh`.

Label children are cached so the hot path does one dict lookup, not a label resolution. Every label
set is bounded: tiers, latency classes, routing reasons and API key ids come from the profile.
"""

from __future__ import annotations

import asyncio
import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from router.errors import ConfigError

# Seconds. Gateway overhead lives in the sub-millisecond range; tiers in the 10 ms - 60 s range.
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Seconds between streamed tokens: ~5-15 ms on a GPU tier, ~100 ms on a CPU stand-in.
_INTER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
_SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
GaugeMode = Literal["livesum", "livemax", "livemostrecent"]


def multiprocess_dir() -> str | None:
    """The folder this process shares its metrics through, or None in one-process mode.

    prometheus-client picks its mode when it is first imported; the variable set after that would
    leave this process counting alone while the scrape claims to merge, so that is refused.
    """
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return None
    if not getattr(values.ValueClass, "_multiprocess", False):
        raise ConfigError(f"{MULTIPROC_ENV} was set after prometheus_client was imported; set it before start-up")
    return path


def forget_dead_processes(path: str) -> list[int]:
    """Drop the live-gauge files of worker processes that no longer exist; returns their pids.

    A worker that exits cleanly does this itself (`GatewayMetrics.process_exit`); one that was killed
    cannot, so every scrape sweeps. Counter and histogram files stay: their counts happened.
    """
    gone: list[int] = []
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid_text = os.path.basename(name).rsplit("_", 1)[-1].removesuffix(".db")
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid in gone or _alive(pid):
            continue
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        gone.append(pid)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and not ours to judge
    return True


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
    in_flight_seqs: int
    capacity_tokens: int | None


@dataclass(slots=True)
class _TierChildren:
    e2e: Histogram
    ttft: Histogram
    overhead: Histogram
    inter_token: Histogram
    prompt_tokens: Counter
    completion_tokens: Counter


@dataclass(slots=True)
class _Watched:
    queue: Gauge
    tokens: Gauge
    seqs: Gauge
    gate: AdmissionView


class GatewayMetrics:
    def __init__(self, tier_names: list[str], router_version: str, policy: str) -> None:
        self.multiprocess_dir = multiprocess_dir()
        self.registry = _Registry(auto_describe=True)
        r = self.registry
        self.tier_names = list(tier_names)
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
        self.inter_token = Histogram(
            "tiergate_inter_token_latency_seconds",
            "Mean time between tokens of one streamed answer relayed live (one observation per answer).",
            ["tier"],
            buckets=_INTER_TOKEN_BUCKETS,
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
        self.router_score = Histogram(
            "tiergate_router_score",
            "The scorer's probability that a tier is not good enough for a model=auto request, by that tier.",
            ["tier"],
            buckets=_SCORE_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "tiergate_upstream_errors", "Tier faults by tier and kind.", ["tier", "kind"], registry=r
        )
        self.tier_ready = self.gauge(
            "tiergate_tier_ready", "1 when the tier's last probe succeeded.", ["tier"], "livemostrecent"
        )
        self.router_info = self.gauge(
            "tiergate_router_info", "The routing policy and scorer version in use.", ["policy", "version"], "livemax"
        )
        self.router_info.labels(policy=policy, version=router_version).set(1)
        self.in_flight = self.gauge("tiergate_in_flight_requests", "Requests being served now.", [], "livesum")
        self.admission_queue = self.gauge(
            "tiergate_admission_queue_depth", "Requests waiting for a tier's KV budget.", ["tier"], "livesum"
        )
        self.admission_tokens = self.gauge(
            "tiergate_admission_in_flight_tokens", "KV tokens held by admitted requests.", ["tier"], "livesum"
        )
        self.admission_seqs = self.gauge(
            "tiergate_tier_in_flight_requests", "Requests holding a lease on the tier's engine.", ["tier"], "livesum"
        )
        self.admission_capacity = self.gauge(
            "tiergate_admission_capacity_tokens",
            "KV tokens the gateway's processes may hold on the tier together (0: unbounded).",
            ["tier"],
            "livesum",
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
            "USD spent on tier calls (every attempt, answered or escalated past), by tier and API key id.",
            ["tier", "key"],
            registry=r,
        )
        self.savings = Counter(
            "tiergate_savings_usd",
            "USD saved against always using the largest tier: the answer's tokens at the top tier's prices,"
            " minus what all of the request's attempts cost, when positive; by the tier that answered.",
            ["tier"],
            registry=r,
        )
        self.overspend = Counter(
            "tiergate_overspend_usd",
            "USD a request cost beyond its answer's tokens at the top tier's prices (a cascade that climbed"
            " to the top paid for the attempts below it); net savings = savings - overspend.",
            ["tier"],
            registry=r,
        )
        # Each worker keeps its own breakers: the worst one shows (a tier some worker will not call).
        self.breaker_state = self.gauge(
            "tiergate_breaker_state", "Each tier's circuit breaker: 0 closed, 1 half-open, 2 open.", ["tier"], "livemax"
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
                inter_token=self.inter_token.labels(name),
                prompt_tokens=self.tokens.labels(name, "prompt"),
                completion_tokens=self.tokens.labels(name, "completion"),
            )
            for name in tier_names
        }
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._routing_children: dict[tuple[str, str], Counter] = {}
        # Children looked up once: labels() costs a lock and a dict build on every call.
        self._cost_children: dict[tuple[str, str], Counter] = {}
        self._slo_children: dict[tuple[str, str], Counter] = {}
        self._saved_children: dict[tuple[str, bool], Counter] = {}
        self._score_children = [self.router_score.labels(name) for name in tier_names[:-1]]
        self._watched: list[_Watched] = []
        for name in tier_names:
            self.tier_ready.labels(name).set(0)
            self.breaker_state.labels(name).set(0)

    def breaker_changed(self, tier: str, value: int, state: str) -> None:
        self.breaker_state.labels(tier).set(value)
        self.breaker_transitions.labels(tier, state).inc()

    def gauge(self, name: str, documentation: str, labels: Sequence[str], mode: GaugeMode) -> Gauge:
        """A gauge in this registry that says how N processes' values combine.

        livesum: the processes' values add up (in flight, queued). livemax: any process's value
        (constant facts such as router_info). livemostrecent: the latest value set by any process (a
        tier probe's verdict). Live modes forget a process once it has exited.
        """
        return Gauge(name, documentation, list(labels), registry=self.registry, multiprocess_mode=mode)

    def routed(self, tier: str, reason: str) -> None:
        counter = self._routing_children.get((tier, reason))
        if counter is None:
            counter = self._routing_children[(tier, reason)] = self.routing.labels(tier, reason)
        counter.inc()

    def scored(self, scores: Sequence[float]) -> None:
        """The scorer's per-tier scores for one model=auto request (one per tier but the top)."""
        for child, score in zip(self._score_children, scores, strict=False):
            child.observe(score)

    def attempt(self, tier: str, prompt_tokens: int, completion_tokens: int, cost_usd: float, key: str = "-") -> None:
        """One tier call's tokens and cost, for an attempt whose answer was not the one returned."""
        children = self._children.get(tier)
        if children is not None:
            if prompt_tokens:
                children.prompt_tokens.inc(prompt_tokens)
            if completion_tokens:
                children.completion_tokens.inc(completion_tokens)
        self.spent(tier, cost_usd, key)

    def spent(self, tier: str, cost_usd: float, key: str = "-") -> None:
        """USD spent on `tier` for the API key with id `key` ('-' when the gateway has no keys)."""
        if cost_usd > 0:
            child = self._cost_children.get((tier, key))
            if child is None:
                child = self._cost_children[(tier, key)] = self.cost.labels(tier, key)
            child.inc(cost_usd)

    def saved(self, tier: str, usd: float) -> None:
        """One answered request's savings against the top tier (negative: it cost more than that)."""
        if usd == 0:
            return
        key = (tier, usd > 0)
        child = self._saved_children.get(key)
        if child is None:
            child = self._saved_children[key] = (self.savings if usd > 0 else self.overspend).labels(tier)
        child.inc(abs(usd))

    def slo_result(self, latency_class: str, result: str) -> None:
        key = (latency_class, result)
        child = self._slo_children.get(key)
        if child is None:
            child = self._slo_children[key] = self.slo.labels(latency_class, result)
        child.inc()

    def watch_admission(self, tier: str, gate: AdmissionView) -> None:
        """Report the gate's live numbers under `tier`: copied by `refresh`, so the hot path updates nothing."""
        self.admission_capacity.labels(tier).set(gate.capacity_tokens or 0)
        # Counted from zero, so the first rejection shows in rate() (a series born at 1 shows none).
        for outcome in ("refused", "overflowed"):
            self.admission_rejections.labels(tier, outcome)
        self._watched.append(
            _Watched(
                self.admission_queue.labels(tier),
                self.admission_tokens.labels(tier),
                self.admission_seqs.labels(tier),
                gate,
            )
        )
        self.refresh()

    def refresh(self) -> None:
        """Copy the admission gates' numbers into their gauges (at each scrape, and every second with N workers)."""
        for w in self._watched:
            w.queue.set(w.gate.queue_depth)
            w.tokens.set(w.gate.in_flight_tokens)
            w.seqs.set(w.gate.in_flight_seqs)

    async def refresh_loop(self, interval_s: float = 1.0) -> None:
        """With N workers a scrape reads the other workers' files: keep their gauges this fresh."""
        while True:
            self.refresh()
            await asyncio.sleep(interval_s)

    def process_exit(self) -> None:
        """This worker is stopping: its live gauges (in flight, queued) stop counting at once."""
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]

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
        inter_token_s: float | None = None,
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
        if inter_token_s is not None:
            children.inter_token.observe(inter_token_s)
        if prompt_tokens:
            children.prompt_tokens.inc(prompt_tokens)
        if completion_tokens:
            children.completion_tokens.inc(completion_tokens)

    def render(self) -> bytes:
        """The exposition: this process's registry, or every worker's files merged."""
        self.refresh()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        forget_dead_processes(self.multiprocess_dir)
        merged = CollectorRegistry(auto_describe=True)
        MultiProcessCollector(merged, self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
