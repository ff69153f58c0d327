"""Who may call, and how much: the stored keys, and the middleware that holds each key to its limits.

Keys are held as SHA-256 digests only (deployments.keys): AuthMiddleware hashes what a caller
presents and compares digests in constant time. QuotaMiddleware, just inside it, admits or refuses
each chat request by the caller's key (gateway.quota does the bookkeeping) and charges the tokens
and USD the request used once it ends; a refusal is a 429 with Retry-After.

State is per gateway process. Each process enforces 1/N of every limit and budget, where N is
`tiergate serve --workers` times the profile's `gateway.replicas` (the same N admission divides
the tiers' KV budgets by), so N processes together never let a key past its limit; a key whose
requests happen to land on one process more than the others is refused a little early.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

from deployments.economics import TierEconomics
from deployments.keys import digest_of, id_of_digest
from deployments.profile import GatewaySpec, KeyLimitsSpec, ProfileError
from gateway.context import RequestContext, context_of
from gateway.errors import RateLimited, render
from gateway.quota import KeyQuota, SpendWindow


@dataclass(frozen=True, slots=True)
class StoredKey:
    digest: bytes
    id: str
    limits: KeyLimitsSpec
    team: str | None = None


def stored_keys(gw: GatewaySpec) -> list[StoredKey]:
    """Every configured API key as its digest and id, with the limits that apply to it."""
    out = [StoredKey(d, id_of_digest(d), gw.key_limits) for d in (digest_of(k.get_secret_value()) for k in gw.api_keys)]
    for spec in gw.keys:
        digest = digest_of(spec.key.get_secret_value())
        base = gw.key_limits
        limits = KeyLimitsSpec(
            requests_per_minute=spec.requests_per_minute or base.requests_per_minute,
            tokens_per_minute=spec.tokens_per_minute or base.tokens_per_minute,
            budget_usd=_first(spec.budget_usd, base.budget_usd),
        )
        out.append(StoredKey(digest, id_of_digest(digest), limits, spec.team))
    return out


def _first(own: float | None, default: float | None) -> float | None:
    return own if own is not None else default


def check_worker_shares(gw: GatewaySpec, workers: int) -> None:
    """Refuse limits too small to split between the processes (each must admit at least one request).

    The processes are `workers` per gateway replica times `gateway.replicas`. Raises ProfileError
    with one line naming the field; `tiergate serve` calls it before starting.
    """
    workers *= gw.replicas
    if workers <= 1:
        return
    named: list[tuple[str, KeyLimitsSpec]] = [("gateway.key_limits", gw.key_limits)]
    named += [(f"gateway.keys.{i}", k) for i, k in enumerate(gw.keys)]
    for where, limits in named:
        rpm = limits.requests_per_minute
        if rpm is not None and rpm < workers:
            raise ProfileError(
                f"{where}.requests_per_minute is {rpm}, below the {workers} gateway processes"
                f" (workers x replicas): each enforces 1/{workers} of it and needs at least one request a minute"
            )


def build_quotas(gw: GatewaySpec, *, workers: int, now: float) -> dict[str, KeyQuota]:
    """One quota per key id that has any limit, each at 1/(`workers` x `gateway.replicas`) of the
    profile's numbers.

    Team windows are shared by the team's keys (in this process).
    """
    share = 1.0 / max(workers * gw.replicas, 1)
    teams = {
        name: SpendWindow(budget_usd=spec.budget_usd * share, period_s=gw.budget_period_s)
        for name, spec in gw.teams.items()
    }
    quotas: dict[str, KeyQuota] = {}
    for key in stored_keys(gw):
        lim = key.limits
        team = teams.get(key.team) if key.team is not None else None
        if team is None and lim == KeyLimitsSpec():
            continue  # nothing to hold this key to
        quotas[key.id] = KeyQuota(
            now=now,
            requests_per_minute=None if lim.requests_per_minute is None else lim.requests_per_minute * share,
            tokens_per_minute=None if lim.tokens_per_minute is None else lim.tokens_per_minute * share,
            budget=None
            if lim.budget_usd is None
            else SpendWindow(budget_usd=lim.budget_usd * share, period_s=gw.budget_period_s),
            team=team,
            team_name=key.team,
        )
    return quotas


def request_cost(ctx: RequestContext, economics: Mapping[str, TierEconomics]) -> float:
    """USD a finished request cost: the service's figure when it set one (a cascade's counts every
    attempt), else the answering tier's price for the tokens it reported (a stream's)."""
    if ctx.cost_usd is not None:
        return ctx.cost_usd
    econ = economics.get(ctx.tier) if ctx.tier is not None else None
    return 0.0 if econ is None else econ.cost_usd(ctx.prompt_tokens, ctx.completion_tokens)


class AccessMetrics:
    """The access metrics: refusals by key id and limit, and what each budgeted key has left."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rejections = Counter(
            "tiergate_ratelimit_rejections",
            "Chat requests refused with 429 by key id and the limit that bound (requests, tokens, spend).",
            ["key", "limit"],
            registry=registry,
        )
        # livesum: with prometheus_client's multiprocess mode the workers' shares add up to the key's total.
        self.budget_remaining = Gauge(
            "tiergate_key_budget_remaining_usd",
            "USD a key may still spend in the current budget window (the lesser of its own and its team's),"
            " as of its last request.",
            ["key"],
            registry=registry,
            multiprocess_mode="livesum",
        )

    def budget_left(self, key: str, usd: float | None) -> None:
        if usd is not None:
            self.budget_remaining.labels(key).set(usd)


class QuotaMiddleware:
    """Hold the chat path to each key's quota: refuse with 429 before any work, charge after it."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        quotas: dict[str, KeyQuota],
        metrics: AccessMetrics,
        cost: Callable[[RequestContext], float],
        path: str,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.quotas = quotas
        self.metrics = metrics
        self.cost = cost
        self.path = path
        self.clock = clock
        self.wall = wall
        for key, quota in quotas.items():
            metrics.budget_left(key, quota.remaining_usd(wall()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        quota = None
        if scope["type"] == "http" and scope["path"] == self.path:
            ctx = context_of(scope)
            quota = self.quotas.get(ctx.key_id)
        if quota is None:
            await self.app(scope, receive, send)
            return
        refusal = quota.admit(self.clock(), self.wall())
        if refusal is not None:
            self.metrics.rejections.labels(ctx.key_id, refusal.limit).inc()
            err = RateLimited(refusal.message, limit=refusal.limit, retry_after_s=refusal.retry_after_s)
            ctx.failed(err)  # the access-log line says why
            await render(err)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            wall = self.wall()
            quota.settle(
                tokens=ctx.prompt_tokens + ctx.completion_tokens, cost_usd=self.cost(ctx), now=self.clock(), wall=wall
            )
            if quota.has_budget:
                self.metrics.budget_left(ctx.key_id, quota.remaining_usd(wall))
