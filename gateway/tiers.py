"""The gateway's live view of its tiers: where to send requests and whether each one answers.

A background task probes each tier's `GET {endpoint}/models`. A tier is ready when the probe
succeeds and, if the endpoint lists models, its upstream model is among them (Ray Serve lists a
model only once its deployment is up). `/readyz` is true while at least one tier is ready.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from deployments.profile import TierSpec
from gateway.background import stop_task
from gateway.errors import HTTPError
from gateway.metrics import GatewayMetrics
from gateway.upstream import UpstreamClient

log = logging.getLogger("tiergate.tiers")


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


class TierRegistry:
    def __init__(self, specs: list[TierSpec], metrics: GatewayMetrics) -> None:
        self.tiers = [Tier.from_spec(s) for s in specs]
        self.by_name = {t.name: t for t in self.tiers}
        self.names = tuple(t.name for t in self.tiers)
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None

    def unavailable(self) -> frozenset[str]:
        return frozenset(t.name for t in self.tiers if t.ready is False)

    def any_ready(self) -> bool:
        return any(t.ready for t in self.tiers)

    async def probe_once(self, client: UpstreamClient, timeout_s: float = 2.0) -> None:
        # Tiers often share an endpoint (the local profile serves three tiers from one engine):
        # ask each endpoint once, then judge every tier against its answer.
        urls = sorted({t.models_url for t in self.tiers})
        answers = await asyncio.gather(*(self._list_models(client, url, timeout_s) for url in urls))
        by_url = dict(zip(urls, answers, strict=True))
        for tier in self.tiers:
            self._judge(tier, *by_url[tier.models_url])

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
