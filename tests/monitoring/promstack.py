"""A real Prometheus on loopback, and the dashboard's and alert rules' queries made runnable against it.

Used by the real-Prometheus test (tests/e2e/test_prometheus.py) and `make dashboard-preview`
(tests/monitoring/preview.py). Prometheus is Debian's `prometheus` package; `make setup` installs it.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.procs import REPO, free_port, running

DASHBOARD = REPO / "k8s" / "grafana" / "tiergate.json"
RULES = REPO / "k8s" / "monitoring" / "prometheusrule.yaml"
# What Grafana's variables stand for when the queries run outside Grafana.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$tier": ".*"}


@dataclass(frozen=True, slots=True)
class PanelQuery:
    panel: str
    legend: str
    expr: str

    @property
    def engine(self) -> bool:
        """A query of the engines behind the gateway (vLLM, Ray Serve), not of the gateway itself."""
        return "tiergate_" not in self.expr

    @property
    def runnable(self) -> str:
        out = self.expr
        for name, value in GRAFANA_VARIABLES.items():
            out = out.replace(name, value)
        return out


def dashboard_queries(path: Path = DASHBOARD) -> list[PanelQuery]:
    """Every target of every panel (rows' nested panels included), in dashboard order."""
    dashboard = json.loads(path.read_text())
    out: list[PanelQuery] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                out.append(PanelQuery(panel["title"], target.get("legendFormat", ""), target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return out


def rule_groups(path: Path = RULES, *, for_override: str | None = None, interval: str | None = None) -> dict[str, Any]:
    """The PrometheusRule's `spec` as a plain rules file; optionally every alert's `for:` and every
    group's evaluation interval replaced (a test cannot wait the real minutes)."""
    spec: dict[str, Any] = yaml.safe_load(path.read_text())["spec"]
    for group in spec["groups"]:
        if interval is not None:
            group["interval"] = interval
        for rule in group["rules"]:
            if for_override is not None and "alert" in rule:
                rule["for"] = for_override
    return spec


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        raise RuntimeError("promtool is missing: `make setup` installs Debian's prometheus package")
    return found


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def _get(self, path: str, **params: str) -> dict[str, Any]:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as resp:
            data: dict[str, Any] = json.load(resp)
        return data

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query; raises with Prometheus' own message when the expression is refused."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        try:
            data = self._get("/api/v1/query", **params)
        except urllib.error.HTTPError as err:
            raise ValueError(f"{expr}: {err.read().decode(errors='replace')}") from None
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step_s}")
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def firing(self) -> set[str]:
        alerts = self._get("/api/v1/alerts")["data"]["alerts"]
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

    def scrapes(self, job: str = "tiergate") -> int:
        """Samples of `up` for the job so far: how many scrapes have happened."""
        result = self.query(f'count_over_time(up{{job="{job}"}}[1h])')
        return int(float(result[0]["value"][1])) if result else 0

    def wait_scrapes(self, more: int, timeout_s: float = 20.0) -> None:
        target = self.scrapes() + more
        deadline = time.monotonic() + timeout_s
        while self.scrapes() < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Prometheus did not scrape {more} more times within {timeout_s} s")
            time.sleep(0.2)

    def wait_firing(self, names: set[str], timeout_s: float = 30.0) -> set[str]:
        deadline = time.monotonic() + timeout_s
        while not names <= (seen := self.firing()):
            if time.monotonic() > deadline:
                return seen
            time.sleep(0.25)
        return seen


@contextmanager
def prometheus(workdir: Path, target: str, rules: dict[str, Any] | None = None,
               scrape_interval: str = "1s") -> Iterator[Prometheus]:  # fmt: skip
    """A Prometheus scraping `target` (host:port, /metrics) every `scrape_interval`, its data under `workdir`."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is missing: `make setup` installs Debian's prometheus package")
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [{"job_name": "tiergate", "static_configs": [{"targets": [target]}]}],
    }
    if rules is not None:
        (workdir / "rules.yaml").write_text(yaml.safe_dump(rules))
        config["rule_files"] = [str(workdir / "rules.yaml")]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    cmd = [
        binary,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    url = f"http://127.0.0.1:{port}"
    with running(cmd, f"{url}/-/ready"):
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield Prometheus(url)
