"""The gateway's metrics in one process, and the multiprocess bookkeeping that keeps N workers right."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.admission import TierAdmission
from gateway.context import RequestContext
from gateway.metrics import MULTIPROC_ENV, GatewayMetrics, forget_dead_processes, multiprocess_dir
from router.errors import ConfigError


def _samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_admission_gauges_show_the_gate_as_it_is_at_scrape_time() -> None:
    metrics = GatewayMetrics(["small", "large"], router_version="v", policy="rule")
    gate = TierAdmission("small", capacity_tokens=1000)
    metrics.watch_admission("small", gate)
    lease = gate.try_lease(300)
    assert lease is not None
    held = _samples(metrics)
    assert held[("tiergate_admission_in_flight_tokens", (("tier", "small"),))] == 300
    assert held[("tiergate_tier_in_flight_requests", (("tier", "small"),))] == 1
    assert held[("tiergate_admission_capacity_tokens", (("tier", "small"),))] == 1000
    lease.release()
    assert _samples(metrics)[("tiergate_tier_in_flight_requests", (("tier", "small"),))] == 0


def test_savings_and_overspend_split_by_sign_so_both_stay_counters() -> None:
    metrics = GatewayMetrics(["small", "large"], router_version="v", policy="rule")
    metrics.saved("small", 0.25)
    metrics.saved("large", -0.1)
    metrics.saved("large", 0.0)
    metrics.spent("small", 0.05, "ab12cd34")
    got = _samples(metrics)
    assert got[("tiergate_savings_usd_total", (("tier", "small"),))] == pytest.approx(0.25)
    assert got[("tiergate_overspend_usd_total", (("tier", "large"),))] == pytest.approx(0.1)
    assert ("tiergate_savings_usd_total", (("tier", "large"),)) not in got
    assert got[("tiergate_cost_usd_total", (("key", "ab12cd34"), ("tier", "small")))] == pytest.approx(0.05)


def test_router_scores_are_observed_per_tier_below_the_top() -> None:
    metrics = GatewayMetrics(["small", "medium", "large"], router_version="v", policy="rule")
    metrics.scored([0.15, 0.95])
    got = _samples(metrics)
    assert got[("tiergate_router_score_count", (("tier", "small"),))] == 1
    assert got[("tiergate_router_score_bucket", (("le", "0.2"), ("tier", "small")))] == 1
    assert got[("tiergate_router_score_bucket", (("le", "0.9"), ("tier", "medium")))] == 0
    assert ("tiergate_router_score_count", (("tier", "large"),)) not in got


def test_inter_token_latency_is_the_streams_span_over_its_tokens() -> None:
    ctx = RequestContext(request_id="r", t0=10.0)
    ctx.token_relayed(10.2)
    ctx.token_relayed(10.5)
    ctx.token_relayed(11.2)
    ctx.completion_tokens = 4
    assert ctx.ttft_s == pytest.approx(0.2)
    assert ctx.inter_token_s() == pytest.approx(1.0 / 3)
    ctx.completion_tokens = 1
    assert ctx.inter_token_s() is None
    assert RequestContext(request_id="r", t0=0.0).inter_token_s() is None


_WORKER = """
import sys, time
from prometheus_client import Counter, Gauge
Gauge("tiergate_in_flight_requests", "d", multiprocess_mode="livesum").set(3)
Counter("tiergate_requests", "d").inc()
print("ready", flush=True)
time.sleep(float(sys.argv[1]))
"""


def _worker(folder: Path, linger_s: float) -> subprocess.Popen[str]:
    """A process writing its metrics to `folder` as a gateway worker does, then lingering."""
    env = {**os.environ, MULTIPROC_ENV: str(folder)}
    proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(linger_s)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_a_killed_workers_live_gauges_are_forgotten_but_its_counts_stay(tmp_path: Path) -> None:
    dead = _worker(tmp_path, 0)
    dead.communicate()
    alive = _worker(tmp_path, 30)
    try:
        assert forget_dead_processes(str(tmp_path)) == [dead.pid]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [f"gauge_livesum_{alive.pid}.db", f"counter_{dead.pid}.db", f"counter_{alive.pid}.db"]
        )
    finally:
        alive.kill()
        alive.communicate()


def test_a_multiprocess_folder_set_after_prometheus_client_loaded_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    assert multiprocess_dir() is None
    monkeypatch.setenv(MULTIPROC_ENV, "/nonexistent")
    with pytest.raises(ConfigError, match="before start-up"):
        multiprocess_dir()


def test_the_k8s_gateway_with_workers_has_a_writable_folder_for_their_metrics() -> None:
    import yaml

    from tests.procs import REPO

    docs = list(yaml.safe_load_all((REPO / "k8s" / "gateway.yaml").read_text()))
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "gateway")
    args = container["args"]
    assert int(args[args.index("--workers") + 1]) > 1
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume
