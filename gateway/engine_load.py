"""The engines' own load signals, read from their Prometheus endpoints.

vLLM counts the sequences it is running and holding in its queue (`vllm:num_requests_running`,
`vllm:num_requests_waiting`). Every gateway replica reads the same engine, so an estimate built
on these stays right however many gateway processes share a tier; the gateway's own in-flight
count sees only its share of the traffic. A tier whose profile names no `metrics_url` falls back
to that in-flight count, and `TierLoad.source` says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.background import stop_task
from router.runtime.slo import TierLoad

log = logging.getLogger("tiergate.engine_load")

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
# Ray Serve LLM re-exports vLLM's metrics with a prefix; both spellings are read.
_ALIASES = {RUNNING: RUNNING, WAITING: WAITING, "ray_" + RUNNING: RUNNING, "ray_" + WAITING: WAITING}


def parse_load(text: str, model: str | None = None) -> TierLoad | None:
    """Running and waiting sequences summed over the engines in one scrape (None: no such metric).

    `model` keeps only samples whose `model_name` label matches, for an endpoint serving several.
    """
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = _ALIASES.get(sample.name)
            if key is None:
                continue
            if model is not None and sample.labels.get("model_name", model) != model:
                continue
            found[key] = found.get(key, 0.0) + float(sample.value)
    if not found:
        return None
    return TierLoad(running=found.get(RUNNING, 0.0), waiting=found.get(WAITING, 0.0), source="engine")


class EngineLoadPoller:
    """Scrapes each engine's metrics every `interval_s`; readings older than `stale_s` are ignored."""

    def __init__(
        self, urls: Mapping[str, tuple[str, str | None]], *, interval_s: float = 0.5, stale_s: float = 5.0
    ) -> None:
        self._urls = dict(urls)  # engine key -> (metrics URL, model name filter)
        self._interval_s = interval_s
        self._stale_s = stale_s
        self._latest: dict[str, tuple[float, TierLoad]] = {}
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def load(self, engine: str) -> TierLoad | None:
        got = self._latest.get(engine)
        if got is None or time.monotonic() - got[0] > self._stale_s:
            return None
        return got[1]

    async def start(self) -> None:
        if not self._urls or self._task is not None:
            return
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=max(self._interval_s * 2, 1.0)))
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def poll_once(self) -> None:
        assert self._session is not None
        for engine, (url, model) in self._urls.items():
            try:
                async with self._session.get(url) as resp:
                    text = await resp.text()
                load = parse_load(text, model)
            except (aiohttp.ClientError, TimeoutError, ValueError) as err:
                log.debug("engine metrics of %s unreadable: %s", engine, err)
                continue
            if load is not None:
                self._latest[engine] = (time.monotonic(), load)

    async def _run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self._interval_s)
