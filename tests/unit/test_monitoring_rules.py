"""The alert rules and the dashboard, checked offline: promtool's own checks and unit tests of every
alert, the dashboard's shape, and every metric they read documented in the README."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.access import AccessMetrics
from gateway.metrics import GatewayMetrics
from tests.monitoring.promstack import (
    DASHBOARD,
    RULES,
    dashboard_queries,
    promtool,
    rule_groups,
)
from tests.procs import REPO

RULES_TEST = REPO / "tests" / "monitoring" / "tiergate-alerts.test.yaml"
_METRIC = re.compile(r"\b(tiergate_[a-z_]+)")


def _promtool(*args: str, cwd: Path) -> str:
    done = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_rules_file_is_a_prometheus_operator_rule_object() -> None:
    obj = yaml.safe_load(RULES.read_text())
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert obj["kind"] == "PrometheusRule"
    assert obj["metadata"]["name"] == "tiergate"
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    names: list[str] = []
    for group in obj["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            assert isinstance(rule["expr"], str)
            if "alert" in rule:
                names.append(rule["alert"])
                assert rule["labels"]["severity"] in {"page", "ticket"}
                assert {"summary", "description"} <= set(rule["annotations"])
    assert {
        "TiergateSLOBurnRateFast",
        "TiergateSLOBurnRateSlow",
        "TiergateHighErrorRate",
        "TiergateTierDown",
        "TiergateCostAnomaly",
    } <= set(names)
    assert len(names) == len(set(names))


def test_promtool_accepts_the_rules_and_every_alert_passes_its_unit_tests(tmp_path: Path) -> None:
    (tmp_path / "tiergate-rules.yaml").write_text(yaml.safe_dump(rule_groups()))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    assert "SUCCESS" in _promtool("check", "rules", "tiergate-rules.yaml", cwd=tmp_path)
    assert "SUCCESS" in _promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    tested = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text()))
    alerts = {r["alert"] for g in rule_groups()["groups"] for r in g["rules"] if "alert" in r}
    assert tested == alerts, "every alert has a promtool unit test"


def test_a_broken_alert_fails_its_promtool_unit_test(tmp_path: Path) -> None:
    """The unit tests can fail: the error-rate alert with its threshold raised past the test's 10% stays quiet."""
    spec = rule_groups()
    for group in spec["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "TiergateHighErrorRate":
                rule["expr"] = rule["expr"].replace("> 0.05", "> 0.5")
    (tmp_path / "tiergate-rules.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    done = subprocess.run([promtool(), "test", "rules", RULES_TEST.name], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode != 0
    assert "TiergateHighErrorRate" in done.stdout + done.stderr


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def test_dashboard_takes_its_datasource_from_a_variable_and_covers_what_sres_watch() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    exprs = " ".join(q.expr for q in dashboard_queries())
    for needed in (
        "tiergate_cost_usd_total",
        "tiergate_savings_usd_total",
        "tiergate_escalations_total",
        "tiergate_routing_decisions_total",
        "tiergate_time_to_first_token_seconds_bucket",
        "tiergate_inter_token_latency_seconds_bucket",
        "tiergate_slo_requests_total",
        "tiergate_admission_queue_depth",
        "tiergate_breaker_state",
        "ray_serve_",
    ):
        assert needed in exprs, needed
    # vLLM renamed its KV-cache gauge: the panel reads either name.
    assert "ray_vllm:kv_cache_usage_perc" in exprs and "ray_vllm:gpu_cache_usage_perc" in exprs


def _documented() -> set[str]:
    readme = (REPO / "README.md").read_text()
    table = readme.split("### Metrics", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `(tiergate_[a-z_]+)`", table, re.MULTILINE))


def _family(name: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", name)


def test_every_metric_the_gateway_exports_or_the_dashboard_reads_is_in_the_readme() -> None:
    documented = _documented()
    metrics = GatewayMetrics(["small", "large"], router_version="v", policy="rule")
    AccessMetrics(metrics.registry)  # the per-key limits' metrics, in the same registry as in the app
    exported = set()
    for family in text_string_to_metric_families(metrics.render().decode()):
        exported.add(family.name + "_total" if family.type == "counter" else family.name)
    assert exported - documented == set(), "exported but not in the README's metrics table"
    read = {_family(m) for q in dashboard_queries() for m in _METRIC.findall(q.expr)}
    read |= {_family(m) for g in rule_groups()["groups"] for r in g["rules"] for m in _METRIC.findall(r["expr"])}
    assert read - documented == set(), "read by the dashboard or alerts but not documented"
    assert documented - exported == set(), "documented but not exported"
