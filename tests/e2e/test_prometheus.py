"""The dashboard and the alerts, proven against a real Prometheus scraping a real gateway.

Three replay tiers (recorded answers of the fixture's three models) behind a 2-worker gateway running
the shipped learned router with the cascade on; mixed traffic (routed, pinned, streamed, a caller's
error, cascade climbs, a rate-limited key); Prometheus scrapes the gateway every second. Every query
of the gateway's dashboard panels must then return data, and every engine query must be accepted.

The injected fault: the mid tier's process is frozen (SIGSTOP): it still accepts connections but
never answers, so its calls time out and are retried, routed requests fall back to the large tier,
requests pinned to mid fail with 504, and the gateway's probe (2 s timeout) marks it down.
Prometheus loads the real PrometheusRule's groups with every `for:` set to 0 s and a 1 s evaluation
interval (the windows of the expressions are unchanged), and TiergateTierDown and
TiergateHighErrorRate must fire.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
import yaml

from deployments.keys import key_id
from tests.e2e.replay_fixture import FIXTURE, MODELS, ROWS
from tests.e2e.test_cascade import _profile as cascade_profile
from tests.monitoring.promstack import Prometheus, dashboard_queries, prometheus, rule_groups
from tests.procs import Proc, free_port, gateway, running, tiergate_cmd

KEY = "sk-metrics-test-0123456789"
# A second key held to 2 requests a minute (1 per worker): its third request in a row is refused.
LIMITED = "sk-metrics-limited-0123456789"
FAILURES = 12  # requests pinned to the frozen tier, in waves


def _profile(endpoints: dict[str, str]) -> dict[str, Any]:
    """The cascade tests' profile (recorded answers, learned router, cascade on), with API keys, a USD
    budget per key and a bounded KV budget per tier, so the key and admission panels have series to show."""
    data = cascade_profile(endpoints)
    data["gateway"] = {
        "access_log": False,
        "api_keys": [KEY],
        "keys": [{"key": LIMITED, "requests_per_minute": 2}],
        "key_limits": {"budget_usd": 1000.0},
        # A frozen tier costs each try 0.3 s, and the request still has time to fall back. No breaker:
        # every request pinned to the frozen tier reaches it and ends in its fault (a breaker would answer
        # 503 itself, which is not the tier's fault; its own tests are the resilience tests').
        "request_timeout_s": 10.0,
        "resilience": {"try_timeout_s": 0.3, "breaker_enabled": False},
    }
    for tier in data["tiers"]:
        tier["kv_capacity_tokens"] = 200000
    return data


class Stack:
    def __init__(self, base: str, prom: Prometheus, tiers: dict[str, Proc]) -> None:
        self.base = base
        self.prom = prom
        self.tiers = tiers
        self.client = httpx.Client(headers={"authorization": f"Bearer {KEY}"}, timeout=30)

    def chat(self, model: str, prompt: str, latency_class: str = "batch", **body: Any) -> httpx.Response:
        payload = {"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": prompt}], **body}
        headers = {"x-tiergate-latency-class": latency_class}
        if not body.get("stream"):
            return self.client.post(self.base + "/chat/completions", json=payload, headers=headers)
        with self.client.stream("POST", self.base + "/chat/completions", json=payload, headers=headers) as resp:
            resp.read()
            return resp


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("prometheus")
    with ExitStack() as es:
        endpoints: dict[str, str] = {}
        procs: dict[str, Proc] = {}
        for tier, model in MODELS.items():
            port = free_port()
            cmd = tiergate_cmd("fake-upstream", "--port", str(port), "--replay", str(FIXTURE), "--model", model)
            procs[tier] = es.enter_context(running(cmd, f"http://127.0.0.1:{port}/health"))
            endpoints[tier] = f"http://127.0.0.1:{port}/v1"
            es.callback(_thaw, procs[tier])  # before it is stopped: a frozen process ignores SIGTERM
        path = tmp / "profile.yaml"
        path.write_text(yaml.safe_dump(_profile(endpoints)))
        # Two workers: the queries run on what a scrape merges from both (as in the k8s Deployment).
        base = es.enter_context(gateway(path, workers=2))
        target = base.removeprefix("http://").removesuffix("/v1")
        prom = es.enter_context(prometheus(tmp, target, rule_groups(for_override="0s", interval="1s")))
        served = Stack(base, prom, procs)
        es.callback(served.client.close)
        yield served


def _thaw(proc: Proc) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.popen.pid, signal.SIGCONT)


def _mixed_traffic(stack: Stack) -> dict[str, int]:
    """Routed (with cascade climbs), pinned, streamed and a caller's error; returns counts by kind."""
    seen = {"ok": 0, "escalated": 0, "streamed": 0}
    for row in ROWS[:8]:
        resp = stack.chat("auto", row["prompt"])
        assert resp.status_code == 200, resp.text
        seen["ok"] += 1
        seen["escalated"] += int(resp.headers["x-tiergate-escalations"]) > 0
    for tier in ("small", "mid", "large"):
        assert stack.chat(tier, ROWS[0]["prompt"], "interactive").status_code == 200
        resp = stack.chat(tier, ROWS[1]["prompt"], stream=True, stream_options={"include_usage": True})
        assert resp.status_code == 200
        seen["streamed"] += 1
    for row in ROWS[8:11]:
        assert stack.chat("auto", row["prompt"], "realtime", stream=True).status_code == 200
    assert stack.chat("no-such-tier", "hello").status_code == 404
    with httpx.Client(headers={"authorization": f"Bearer {LIMITED}"}, timeout=30) as limited:
        body = {"model": "small", "max_tokens": 8, "messages": [{"role": "user", "content": ROWS[0]["prompt"]}]}
        statuses = [limited.post(stack.base + "/chat/completions", json=body).status_code for _ in range(3)]
    assert statuses.count(429) >= 1, statuses
    seen["limited_ok"], seen["refused"] = statuses.count(200), statuses.count(429)
    return seen


def test_every_dashboard_query_returns_data_and_alerts_fire_on_a_downed_tier(stack: Stack) -> None:
    started = time.monotonic()
    seen = _mixed_traffic(stack)
    assert seen["escalated"] > 0, "the fixture's operating point should make some routed requests climb"
    stack.prom.wait_scrapes(3)
    assert not stack.prom.firing() & {"TiergateTierDown", "TiergateHighErrorRate"}

    # The fault: the mid tier freezes. Requests routed now still see it ready (its probe takes 2 s to
    # fail), so the ones that climb to mid fall back to large; requests pinned to mid fail.
    os.kill(stack.tiers["mid"].popen.pid, signal.SIGSTOP)
    with ThreadPoolExecutor(8) as pool:
        routed = list(pool.map(lambda row: stack.chat("auto", row["prompt"]), ROWS[:8]))
        failed: list[int] = []
        # In waves over several scrapes: a series first seen already at its final count shows no rate().
        for _ in range(FAILURES // 3):
            failed += [r.status_code for r in pool.map(lambda _: stack.chat("mid", ROWS[0]["prompt"]), range(3))]
            time.sleep(0.5)
    assert [r.status_code for r in routed] == [200] * len(routed)
    assert set(failed) == {504}, failed
    firing = stack.prom.wait_firing({"TiergateTierDown", "TiergateHighErrorRate"}, timeout_s=30)
    assert {"TiergateTierDown", "TiergateHighErrorRate"} <= firing, firing
    down = stack.prom.query('ALERTS{alertname="TiergateTierDown",alertstate="firing"}')
    assert [a["metric"]["tier"] for a in down] == ["mid"]
    assert stack.prom.query('sum(tiergate_fallbacks_total{from_tier="mid",to_tier="large"})')

    problems: list[str] = []
    checked = 0
    for q in dashboard_queries():
        try:
            result = stack.prom.query(q.runnable)
        except ValueError as err:
            problems.append(f"{q.panel} [{q.legend}]: refused: {err}")
            continue
        checked += 1
        if not result and not q.engine:
            problems.append(f"{q.panel} [{q.legend}]: no data: {q.runnable}")
    assert not problems, "\n".join(problems)
    assert checked == len(dashboard_queries())

    # The numbers behind the panels are the traffic sent: every request counted once, by status.
    by_status = {
        r["metric"]["status"]: round(float(r["value"][1]))
        for r in stack.prom.query("sum by (status) (tiergate_requests_total)")
    }
    ok = seen["ok"] + 6 + 3 + seen["limited_ok"] + len(routed)
    assert {k: v for k, v in by_status.items() if k < "500"} == {"200": ok, "404": 1, "429": seen["refused"]}
    assert {k: v for k, v in by_status.items() if k >= "500"} == {"504": FAILURES}
    keyed = stack.prom.query("sum by (key) (tiergate_cost_usd_total)")
    assert {r["metric"]["key"] for r in keyed} == {key_id(KEY), key_id(LIMITED)}
    left = stack.prom.query("sum by (key) (tiergate_key_budget_remaining_usd)")
    assert {r["metric"]["key"] for r in left} == {key_id(KEY), key_id(LIMITED)}
    assert time.monotonic() - started < 60
