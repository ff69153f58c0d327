"""The gateway's live view of its tiers: where to send requests and whether each one answers.

A background task probes each tier's `GET {endpoint}/models`. A tier is ready when the probe
succeeds and, if the endpoint lists models, its upstream model is among them (Ray Serve lists a
model only once its deployment is up).

Each tier also has a circuit breaker (router.runtime.breaker) fed by the outcome of every call the
gateway makes to it (gateway/resilience.py). A tier is usable when it is not known down (its probe
did not fail) and its breaker admits calls; routing skips the unusable ones. A breaker never opens
on the last usable tier, and when none is usable the breakers are ignored rather than refusing
every request. `/readyz` is true while at least one tier is ready and usable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from deployments.profile import ResilienceSpec, TierSpec
from gateway.background import stop_task
from gateway.errors import HTTPError
from gateway.metrics import GatewayMetrics
from gateway.upstream import UpstreamClient
from router.runtime.breaker import BreakerConfig, BreakerState, CircuitBreaker

log = logging.getLogger("tiergate.tiers")
_NONE: frozenset[str] = frozenset()


@dataclass(slots=True)
class Tier:
    name: str
    chat_url: str
    models_url: str
    upstream_model: str
    default_max_tokens: int
    context_length_tokens: int
    # None until the first probe: an unprobed tier is not refused traffic, only reported not ready.
    ready: bool | None = None
    last_error: str | None = None
    breaker: CircuitBreaker | None = field(default=None, repr=False)

    @classmethod
    def from_spec(cls, spec: TierSpec) -> Tier:
        base = spec.endpoint.rstrip("/")
        return cls(
            name=spec.name,
            chat_url=f"{base}/chat/completions",
            models_url=f"{base}/models",
            upstream_model=spec.upstream_model,
            default_max_tokens=spec.default_max_tokens,
            context_length_tokens=spec.context_length_tokens,
        )


def breaker_config(spec: ResilienceSpec) -> BreakerConfig | None:
    """The breakers' settings from the profile; None when the profile turns breakers off."""
    if not spec.breaker_enabled:
        return None
    return BreakerConfig(
        failure_rate=spec.breaker_failure_rate,
        min_calls=spec.breaker_min_calls,
        window_s=spec.breaker_window_s,
        open_s=spec.breaker_open_s,
    )


class TierRegistry:
    def __init__(
        self,
        specs: list[TierSpec],
        metrics: GatewayMetrics,
        breakers: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tiers = [Tier.from_spec(s) for s in specs]
        self.by_name = {t.name: t for t in self.tiers}
        self.names = tuple(t.name for t in self.tiers)
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        if breakers is not None:
            for tier in self.tiers:
                tier.breaker = CircuitBreaker(breakers, clock, self._on_breaker(tier.name))

    def _on_breaker(self, name: str) -> Callable[[BreakerState], None]:
        def changed(state: BreakerState) -> None:
            log.warning("tier %s circuit breaker is %s", name, state.label)
            self._metrics.breaker_changed(name, int(state), state.label)

        return changed

    def _usable(self, tier: Tier) -> bool:
        return tier.ready is not False and (tier.breaker is None or tier.breaker.admits())

    def unavailable(self) -> frozenset[str]:
        """Tiers routing must skip: known down, or their breaker refuses calls (unless that is all of them)."""
        unusable = [t.name for t in self.tiers if not self._usable(t)]
        if not unusable:
            return _NONE
        if len(unusable) < len(self.tiers):
            return frozenset(unusable)
        return frozenset(t.name for t in self.tiers if t.ready is False)

    def any_ready(self) -> bool:
        return any(t.ready and self._usable(t) for t in self.tiers)

    def breaker_state(self, name: str) -> BreakerState:
        breaker = self.by_name[name].breaker
        return BreakerState.CLOSED if breaker is None else breaker.state

    def allow(self, name: str) -> bool:
        """Whether a call to `name` may go now (in half-open, this call becomes the probe)."""
        tier = self.by_name[name]
        if tier.breaker is None or tier.breaker.allow():
            return True
        # Nothing else is usable: trying a failing tier beats refusing the request.
        return not any(self._usable(t) for t in self.tiers if t is not tier)

    def retry_after_s(self, name: str) -> float:
        breaker = self.by_name[name].breaker
        return 0.0 if breaker is None else breaker.retry_after_s()

    def succeeded(self, name: str) -> None:
        breaker = self.by_name[name].breaker
        if breaker is not None:
            breaker.record_success()

    def failed(self, name: str) -> None:
        """A tier fault on `name`; its breaker may open unless it is the last usable tier."""
        tier = self.by_name[name]
        if tier.breaker is not None:
            others = any(self._usable(t) for t in self.tiers if t is not tier)
            tier.breaker.record_failure(may_open=others)

    def neutral(self, name: str) -> None:
        """A call that ended telling nothing about the tier (a 4xx, a departed caller)."""
        breaker = self.by_name[name].breaker
        if breaker is not None:
            breaker.record_neutral()

    async def probe_once(self, client: UpstreamClient, timeout_s: float = 2.0) -> None:
        # Tiers often share an endpoint (the local profile serves three tiers from one engine):
        # ask each endpoint once, then judge every tier against its answer.
        urls = sorted({t.models_url for t in self.tiers})
        answers = await asyncio.gather(*(self._list_models(client, url, timeout_s) for url in urls))
        by_url = dict(zip(urls, answers, strict=True))
        for tier in self.tiers:
            self._judge(tier, *by_url[tier.models_url])
            if tier.breaker is not None:
                # Reading the state moves an open breaker whose time is up to half-open, so the
                # gauge and the log show it even while no request comes this tier's way.
                _ = tier.breaker.state

    @staticmethod
    async def _list_models(
        client: UpstreamClient, url: str, timeout_s: float
    ) -> tuple[set[str | None] | None, str | None]:
        """The model ids an endpoint lists, or None and why it could not be asked."""
        try:
            listing = await client.get_json(url, timeout_s=timeout_s)
            return {m.get("id") for m in listing.get("data", []) if isinstance(m, dict)}, None
        except HTTPError as err:
            return None, err.message
        except (AttributeError, TypeError):
            return None, "endpoint's model list is not OpenAI-shaped"

    def _judge(self, tier: Tier, served: set[str | None] | None, error: str | None) -> None:
        ok = served is not None and (not served or tier.upstream_model in served)
        if served is not None and not ok:
            error = f"endpoint does not list model {tier.upstream_model!r} yet"
        if ok != tier.ready:
            log.info("tier %s is %s%s", tier.name, "ready" if ok else "not ready", f": {error}" if error else "")
        tier.ready, tier.last_error = ok, error
        self._metrics.tier_ready.labels(tier.name).set(1 if ok else 0)

    def start(self, client: UpstreamClient, interval_s: float) -> None:
        self._task = asyncio.create_task(self._loop(client, interval_s))

    async def _loop(self, client: UpstreamClient, interval_s: float) -> None:
        while True:
            await self.probe_once(client)
            # Probe quickly until everything is ready, then settle to the configured interval.
            await asyncio.sleep(interval_s if all(t.ready for t in self.tiers) else min(interval_s, 1.0))

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
