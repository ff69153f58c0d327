"""Everything one gateway process holds: profile, tiers, client, scorer, metrics, service."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from deployments.economics import GENERIC_PRIOR, TierEconomics, tier_economics
from deployments.limits import context_tokens
from deployments.planning import TierPlanningError, kv_tokens_capacity
from deployments.profile import Profile, ProfileError, RoutingSpec
from gateway.admission import TierAdmission, process_share
from gateway.background import stop_task
from gateway.engine_load import EngineLoadPoller
from gateway.limits import TierLimits
from gateway.metrics import GatewayMetrics
from gateway.policy_watch import PolicyWatcher, write_override
from gateway.service import ChatService
from gateway.tiers import TierRegistry, breaker_config
from gateway.upstream import UpstreamClient
from router.errors import ConfigError
from router.runtime.cascade import AnswerJudge
from router.runtime.policy import HeuristicScorer, Scorer
from router.runtime.slo import LatencyEstimator, LatencyPrior

log = logging.getLogger("tiergate.admission")


def admission_gates(profile: Profile, processes: int = 1) -> dict[str, TierAdmission]:
    """One admission gate per serving engine, shared by every tier that names the same engine.

    Tiers naming the same `engine` share one KV cache (the local profile serves all three tiers
    from one engine), so they must share one budget. Capacity comes from the tier's
    `kv_capacity_tokens`, else from the capacity planner (KV tokens per replica x replicas); a
    profile the planner finds cannot fit is refused here, with its numbers. With `processes`
    gateway processes in front of the tiers, this one admits against its share (gateway.admission).
    """
    gw = profile.gateway
    by_engine: dict[str, TierAdmission] = {}
    gates: dict[str, TierAdmission] = {}
    for spec in profile.tiers:
        engine = spec.engine
        try:
            whole = spec.kv_capacity_tokens if spec.kv_capacity_tokens is not None else kv_tokens_capacity(spec)
        except TierPlanningError as err:
            raise ProfileError(f"tier {spec.name!r} cannot be served as described: {err}") from None
        capacity = process_share(whole, processes)
        if capacity is not None and processes > 1 and capacity < context_tokens(spec, profile.tiers):
            log.warning(
                "tier %s: this process's share of its KV budget (%d of %d tokens, %d processes) is smaller than"
                " its context; a full-context request runs alone in a process",
                spec.name,
                capacity,
                whole,
                processes,
            )
        gate = by_engine.get(engine)
        if gate is None:
            gate = by_engine[engine] = TierAdmission(
                spec.name,
                capacity_tokens=capacity,
                max_queue=gw.admission_max_queue,
                queue_timeout_s=gw.admission_queue_timeout_s,
                realtime_max_seqs=gw.realtime_max_seqs,
            )
        elif gate.capacity_tokens is None and capacity is not None:
            gate.capacity_tokens = capacity
        gates[spec.name] = gate
    return gates


def latency_estimator(profile: Profile, economics: dict[str, TierEconomics]) -> LatencyEstimator:
    """One estimator for the fleet, its corrections learned per engine.

    Tiers naming one engine share its KV cache, batch and queue: the slowdown a busy engine shows
    through one of them is what the others will meet, so they learn it together. A shared correction
    needs one prior: the engine's is the first planned one among its tiers (a tier without a plan has
    the generic prior; the engine's serving section or a latency_plan says more). Two different
    plans for one engine are refused.
    """
    chosen: dict[str, tuple[str, LatencyPrior]] = {}
    for spec in profile.tiers:
        prior = economics[spec.name].prior
        seen = chosen.get(spec.engine)
        if seen is None or seen[1] == GENERIC_PRIOR:
            chosen[spec.engine] = (spec.name, prior)
        elif prior not in (GENERIC_PRIOR, seen[1]):
            raise ProfileError(
                f"tiers {seen[0]!r} and {spec.name!r} name engine {spec.engine!r} but plan different latencies;"
                " one engine has one speed: give latency_plan (or serving) on one of them only"
            )
    return LatencyEstimator(
        {spec.name: chosen[spec.engine][1] for spec in profile.tiers},
        engines={spec.name: spec.engine for spec in profile.tiers},
    )


class RouterParts:
    """What the profile's routing section asks for: a scorer, and for a live cascade its judge."""

    def __init__(self, scorer: Scorer, judge: AnswerJudge | None = None, start_thresholds: tuple[float, ...] = ()):
        self.scorer = scorer
        self.judge = judge
        # Per tier but the last, from the artifact's operating point (empty: the profile's thresholds).
        self.start_thresholds = start_thresholds


def load_router(profile: Profile) -> RouterParts:
    """Load the scorer and, with the cascade on, the verifier of the same trained artifact."""
    routing = profile.routing
    if routing.policy != "learned":
        return RouterParts(HeuristicScorer())
    # Imported only when used: scikit-learn adds a second to start-up that rule profiles never pay.
    from router.runtime.artifact import ArtifactError, load_model, resolve_artifact
    from router.runtime.model import LearnedScorer
    from router.runtime.verifier import Verifier, VerifierJudge

    missing = [t.name for t in profile.tiers if not t.router_rung]
    if missing:
        raise ProfileError(f"routing.policy is 'learned' but tiers {missing} have no router_rung")
    rungs = [t.router_rung or "" for t in profile.tiers]
    try:
        model = load_model(resolve_artifact(routing.scorer_artifact))
        scorer = LearnedScorer(model, rungs)
        if not routing.cascade.enabled:
            return RouterParts(scorer)
        judge = VerifierJudge(Verifier(model), model, {t.name: t.router_rung or "" for t in profile.tiers})
        start: tuple[float, ...] = ()
        if routing.cascade.use_operating_point:
            top = len(model.ladder) - 1
            points = model.operating_point.start_thresholds
            # A tier standing for the top rung has nothing above it: its threshold never matters.
            start = tuple(points[i] if i < top else 1.0 for i in (model.rung_index(r) for r in rungs[:-1]))
        return RouterParts(scorer, judge, start)
    except (ArtifactError, KeyError) as err:
        raise ProfileError(f"routing.scorer_artifact: {err}") from None


def engine_load_poller(profile: Profile) -> EngineLoadPoller:
    """One scrape per engine that names a metrics_url; tiers sharing an engine share its reading."""
    urls: dict[str, tuple[str, str | None]] = {}
    for spec in profile.tiers:
        if spec.metrics_url is not None:
            urls.setdefault(spec.engine, (spec.metrics_url, spec.upstream_model))
    return EngineLoadPoller(urls)


class AppState:
    def __init__(
        self,
        profile: Profile,
        scorer: Scorer | None = None,
        *,
        profile_path: str | None = None,
        policy_override_path: str | None = None,
        workers: int = 1,
    ) -> None:
        self.profile = profile
        self._fixed_scorer = scorer
        parts = RouterParts(scorer) if scorer is not None else load_router(profile)
        self.scorer: Scorer = parts.scorer
        try:
            economics = {spec.name: tier_economics(spec) for spec in profile.tiers}
        except ConfigError as err:
            raise ProfileError(f"tier prices and latency priors: {err}") from None
        self.estimator = latency_estimator(profile, economics)
        self.engine_load = engine_load_poller(profile)
        names = [t.name for t in profile.tiers]
        self.metrics = GatewayMetrics(names, router_version=self.scorer.version, policy=profile.routing.policy)
        self.tiers = TierRegistry(profile.tiers, self.metrics, breaker_config(profile.gateway.resilience))
        limits = TierLimits.from_specs(profile.tiers)
        gw = profile.gateway
        self.client = UpstreamClient(pool_size=gw.upstream_pool_size, connect_timeout_s=gw.connect_timeout_s)
        # Every process of every gateway replica admits against its share of each tier's budget.
        self.processes = workers * profile.gateway.replicas
        self.admission = admission_gates(profile, self.processes)
        for name, gate in self.admission.items():
            self.metrics.watch_admission(name, gate)
        self.service = ChatService(
            profile,
            tiers=self.tiers,
            client=self.client,
            scorer=self.scorer,
            metrics=self.metrics,
            admission=self.admission,
            economics=economics,
            estimator=self.estimator,
            judge=parts.judge,
            start_thresholds=parts.start_thresholds,
            engine_load=self.engine_load,
            limits=limits,
        )

        self.override_path = Path(policy_override_path) if policy_override_path else None
        self._metrics_task: asyncio.Task[None] | None = None
        self.policy_watch = PolicyWatcher(
            self.apply_routing,
            profile_path=Path(profile_path) if profile_path else None,
            override_path=self.override_path,
        )

    def prepare_routing(self, routing: RoutingSpec) -> tuple[Profile, RouterParts]:
        """The profile and router parts a new routing section makes; raises ProfileError when it does not
        fit the tiers. Slow (a learned policy loads its artifact): callers run it off the event loop."""
        data = self.profile.model_dump()
        data["routing"] = routing.model_dump()
        try:
            profile = Profile.model_validate(data)
        except ValidationError as err:
            raise ProfileError(f"routing: {err}") from None
        parts = RouterParts(self._fixed_scorer) if self._fixed_scorer is not None else load_router(profile)
        return profile, parts

    def install_routing(self, prepared: tuple[Profile, RouterParts]) -> None:
        """Serve the next request under prepared routing (on the event loop, so no request sees half of it)."""
        profile, parts = prepared
        self.profile = profile
        self.scorer = parts.scorer
        self.service.set_policy(profile, parts.scorer, parts.judge, parts.start_thresholds)

    async def apply_routing(self, routing: RoutingSpec) -> None:
        """Prepare in a worker thread, so requests keep being served while an artifact loads; then install."""
        self.install_routing(await asyncio.to_thread(self.prepare_routing, routing))

    async def publish_routing(self, routing: RoutingSpec) -> None:
        """Apply here, and leave it where this serve's other workers pick it up."""
        await self.apply_routing(routing)
        if self.override_path is not None:
            write_override(self.override_path, routing)

    async def start(self, probe_interval_s: float) -> None:
        await self.client.start()
        self.tiers.start(self.client, probe_interval_s)
        await self.engine_load.start()
        self.policy_watch.start()
        if self.metrics.multiprocess_dir is not None:
            self._metrics_task = asyncio.create_task(self.metrics.refresh_loop())

    async def stop(self) -> None:
        await stop_task(self._metrics_task)
        self.metrics.process_exit()
        await self.policy_watch.stop()
        await self.engine_load.stop()
        await self.tiers.stop()
        await self.client.close()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        tiers = {
            t.name: {
                "ready": bool(t.ready),
                "breaker": self.tiers.breaker_state(t.name).label,
                **({"error": t.last_error} if t.last_error else {}),
            }
            for t in self.tiers.tiers
        }
        ready = self.tiers.any_ready()
        status = "ready" if ready else "not ready"
        return ready, {"status": status, "tiers": tiers}

    def model_list(self, now_s: int) -> dict[str, Any]:
        router_meta = {"policy": self.profile.routing.policy, "scorer_version": self.scorer.version}
        data: list[dict[str, Any]] = [
            {
                "id": "auto",
                "object": "model",
                "created": now_s,
                "owned_by": "tiergate",
                "tiergate": router_meta,
            }
        ]
        for spec, tier in zip(self.profile.tiers, self.tiers.tiers, strict=True):
            data.append(
                {
                    "id": spec.name,
                    "object": "model",
                    "created": now_s,
                    "owned_by": "tiergate",
                    "tiergate": {
                        "upstream_model": spec.upstream_model,
                        "ready": bool(tier.ready),
                        "context_length_tokens": context_tokens(spec, self.profile.tiers),
                        "params_billions": spec.params_billions,
                    },
                }
            )
        return {"object": "list", "data": data}
