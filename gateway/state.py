"""Everything one gateway process holds: profile, tiers, client, scorer, metrics, service."""

from __future__ import annotations

from typing import Any

from deployments.planning import TierPlanningError, kv_tokens_capacity
from deployments.profile import Profile, ProfileError
from gateway.admission import TierAdmission
from gateway.metrics import GatewayMetrics
from gateway.service import ChatService
from gateway.tiers import TierRegistry
from gateway.upstream import UpstreamClient
from router.runtime.policy import HeuristicScorer, Scorer


def admission_gates(profile: Profile) -> dict[str, TierAdmission]:
    """One admission gate per serving engine, shared by every tier that names the same engine.

    Tiers naming the same `engine` share one KV cache (the local profile serves all three tiers
    from one engine), so they must share one budget. Capacity comes from the tier's
    `kv_capacity_tokens`, else from the capacity planner (KV tokens per replica x replicas); a
    profile the planner finds cannot fit is refused here, with its numbers.
    """
    gw = profile.gateway
    by_engine: dict[str, TierAdmission] = {}
    gates: dict[str, TierAdmission] = {}
    for spec in profile.tiers:
        engine = spec.engine
        try:
            capacity = spec.kv_capacity_tokens if spec.kv_capacity_tokens is not None else kv_tokens_capacity(spec)
        except TierPlanningError as err:
            raise ProfileError(f"tier {spec.name!r} cannot be served as described: {err}") from None
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


def scorer_for(profile: Profile) -> Scorer:
    """The scorer the profile's routing policy names; a learned artifact is loaded and checked here."""
    if profile.routing.policy != "learned":
        return HeuristicScorer()
    # Imported only when used: scikit-learn adds a second to start-up that rule profiles never pay.
    from router.runtime.artifact import ArtifactError, load_model, resolve_artifact
    from router.runtime.model import LearnedScorer

    missing = [t.name for t in profile.tiers if not t.router_rung]
    if missing:
        raise ProfileError(f"routing.policy is 'learned' but tiers {missing} have no router_rung")
    try:
        model = load_model(resolve_artifact(profile.routing.scorer_artifact))
        return LearnedScorer(model, [t.router_rung or "" for t in profile.tiers])
    except (ArtifactError, KeyError) as err:
        raise ProfileError(f"routing.scorer_artifact: {err}") from None


class AppState:
    def __init__(self, profile: Profile, scorer: Scorer | None = None) -> None:
        self.profile = profile
        self.scorer: Scorer = scorer if scorer is not None else scorer_for(profile)
        names = [t.name for t in profile.tiers]
        self.metrics = GatewayMetrics(names, router_version=self.scorer.version, policy=profile.routing.policy)
        self.tiers = TierRegistry(profile.tiers, self.metrics)
        gw = profile.gateway
        self.client = UpstreamClient(pool_size=gw.upstream_pool_size, connect_timeout_s=gw.connect_timeout_s)
        self.admission = admission_gates(profile)
        for name, gate in self.admission.items():
            self.metrics.watch_admission(name, gate)
        self.service = ChatService(
            profile,
            tiers=self.tiers,
            client=self.client,
            scorer=self.scorer,
            metrics=self.metrics,
            admission=self.admission,
        )

    async def start(self, probe_interval_s: float) -> None:
        await self.client.start()
        self.tiers.start(self.client, probe_interval_s)

    async def stop(self) -> None:
        await self.tiers.stop()
        await self.client.close()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        tiers = {
            t.name: {"ready": bool(t.ready), **({"error": t.last_error} if t.last_error else {})}
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
                        "context_length_tokens": spec.context_length_tokens,
                        "params_billions": spec.params_billions,
                    },
                }
            )
        return {"object": "list", "data": data}
