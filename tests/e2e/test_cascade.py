"""The live cascade and the admin API, end to end: replay tiers and a gateway as real processes.

The tiers answer with the recorded answers of the fixture's three models; the gateway runs the
shipped learned artifact with the cascade on. The artifact's operating point always escalates
rung 0 (its verifier threshold there is -1), so a request that starts at the small tier climbs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.replay_tier import token_count
from tests.e2e.replay_fixture import FIXTURE, MODELS, PRICE, ROWS
from tests.procs import fake_upstream, gateway

ADMIN = "admin-key-for-tests-0123456789"
MID_DELAY_MS = 1500


def _profile(endpoints: dict[str, str]) -> dict[str, Any]:
    return {
        "name": "cascade-e2e",
        "tiers": [
            {
                "name": tier,
                "endpoint": endpoints[tier],
                "upstream_model": MODELS[tier],
                "router_rung": MODELS[tier],
                "context_length_tokens": 32768,
                "default_max_tokens": 64,
                "latency_plan": "llama-3.2-1b@h100-80gb",
                "engine_max_num_seqs": 8,
                "metrics_url": endpoints[tier].removesuffix("/v1") + "/metrics",
                "price_per_million_prompt_tokens_usd": PRICE[tier],
                "price_per_million_output_tokens_usd": PRICE[tier],
            }
            for tier in ("small", "mid", "large")
        ],
        "routing": {"policy": "learned", "scorer_artifact": "default", "cascade": {"enabled": True}},
        "gateway": {"admin_key": ADMIN, "access_log": False},
    }


class Stack:
    def __init__(self, base: str, profile_path: Path, tiers: dict[str, str]) -> None:
        self.base = base
        self.root = base.removesuffix("/v1")
        self.profile_path = profile_path
        self.tiers = tiers

    def chat(self, prompt: str, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {})
        body = {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": prompt}], **kw}
        return httpx.post(self.base + "/chat/completions", json=body, headers=headers, timeout=30)

    def preview(self, prompt: str, **headers: str) -> dict[str, Any]:
        body = {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": prompt}]}
        resp = httpx.post(
            self.root + "/admin/route-preview", json=body, headers={"authorization": f"Bearer {ADMIN}", **headers}
        )
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()
        return data

    def stats(self, tier: str) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.tiers[tier].removesuffix("/v1") + "/fake/stats").json()
        return data


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    def replay(model: str, *extra: str) -> Any:
        return fake_upstream("--replay", str(FIXTURE), "--model", model, *extra)

    with (
        replay(MODELS["small"]) as small,
        replay(MODELS["mid"], "--ttft-ms", str(MID_DELAY_MS)) as mid,
        replay(MODELS["large"]) as large,
    ):
        tiers = {"small": small, "mid": mid, "large": large}
        path = Path(tmp_path_factory.mktemp("cascade")) / "profile.yaml"
        path.write_text(yaml.safe_dump(_profile(tiers)))
        with gateway(path) as base:
            yield Stack(base, path, tiers)


def _starting_at_small(stack: Stack) -> str:
    for row in ROWS:
        plan = stack.preview(row["prompt"], **{"x-tiergate-latency-class": "batch"})
        if plan["tier"] == "small" and plan["cascade"]:
            assert plan["ladder"] == ["small", "mid", "large"]
            return str(row["prompt"])
    pytest.fail("no fixture prompt starts at the small tier")


def _row(prompt: str) -> dict[str, Any]:
    return next(r for r in ROWS if r["prompt"] == prompt)


def _cost(prompt: str, tiers: list[str]) -> float:
    row = _row(prompt)
    return sum((token_count(prompt) + token_count(row["responses"][MODELS[t]])) * PRICE[t] / 1e6 for t in tiers)


def test_route_preview_calls_no_tier_and_estimates_every_tier(stack: Stack) -> None:
    before = {t: stack.stats(t)["requests"] for t in stack.tiers}
    plan = stack.preview(ROWS[0]["prompt"])
    assert {t: stack.stats(t)["requests"] for t in stack.tiers} == before
    assert set(plan["estimates"]) == {"small", "mid", "large"}
    for est in plan["estimates"].values():
        assert 0 < est["ttft_ms"] <= est["total_ms"] and est["cost_usd"] > 0
        assert est["load"]["source"] == "engine"  # read from the tier's own vLLM-named gauges
    assert plan["latency_class"] == "interactive" and plan["budget"]["total_ms"] == 1000.0


def test_a_doubted_answer_climbs_and_headers_and_cost_add_up(stack: Stack) -> None:
    prompt = _starting_at_small(stack)
    resp = stack.chat(prompt, headers={"x-tiergate-latency-class": "batch"})
    assert resp.status_code == 200, resp.text
    tried = resp.headers["x-tiergate-tiers-tried"].split(",")
    assert tried[:2] == ["small", "mid"] and int(resp.headers["x-tiergate-escalations"]) == len(tried) - 1
    served = resp.headers["x-tiergate-tier"]
    assert served == tried[-1] == resp.json()["model"]
    assert resp.json()["choices"][0]["message"]["content"] == _row(prompt)["responses"][MODELS[served]]
    assert float(resp.headers["x-tiergate-cost-usd"]) == pytest.approx(_cost(prompt, tried), rel=1e-6)
    # usage is the returned answer's alone; the caller asked for no logprobs and gets none.
    assert resp.json()["usage"]["completion_tokens"] == token_count(_row(prompt)["responses"][MODELS[served]])
    assert resp.json()["choices"][0].get("logprobs") is None
    assert resp.headers["x-tiergate-slo"] == "met"
    metrics = httpx.get(stack.root + "/metrics").text
    assert 'tiergate_escalations_total{from_tier="small",reason="verifier-doubts-answer",to_tier="mid"}' in metrics
    assert 'tiergate_slo_requests_total{latency_class="batch",result="met"}' in metrics
    assert 'tiergate_cost_usd_total{key="-",tier="small"}' in metrics
    # Against always asking the top tier: a climb that ends there paid for the attempts below it.
    assert f'tiergate_{"overspend" if served == "large" else "savings"}_usd_total{{tier="{served}"}}' in metrics


def test_no_escalation_once_the_budget_is_spent(stack: Stack) -> None:
    prompt = _starting_at_small(stack)
    resp = stack.chat(prompt, headers={"x-tiergate-latency-class": "batch", "x-tiergate-slo-total-ms": "5"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-tiergate-tiers-tried"] == "small"
    assert resp.headers["x-tiergate-escalations"] == "0"
    assert resp.headers["x-tiergate-cascade-stopped"] == "budget-spent"


def test_a_buffered_stream_never_switches_tier_after_its_first_byte(stack: Stack) -> None:
    prompt = _starting_at_small(stack)
    with httpx.stream(
        "POST",
        stack.base + "/chat/completions",
        json={"model": "auto", "stream": True, "max_tokens": 16, "messages": [{"role": "user", "content": prompt}]},
        headers={"x-tiergate-latency-class": "batch"},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        served = resp.headers["x-tiergate-tier"]
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["model"] for c in chunks} == {served}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == _row(prompt)["responses"][MODELS[served]]
    assert int(resp.headers["x-tiergate-escalations"]) >= 1


def test_a_realtime_stream_commits_to_one_tier(stack: Stack) -> None:
    prompt = _starting_at_small(stack)
    with httpx.stream(
        "POST",
        stack.base + "/chat/completions",
        json={"model": "auto", "stream": True, "max_tokens": 16, "messages": [{"role": "user", "content": prompt}]},
        headers={"x-tiergate-latency-class": "realtime"},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-tiergate-escalations"] == "0"
        assert resp.headers["x-tiergate-tiers-tried"] == resp.headers["x-tiergate-tier"]
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"


def test_a_caller_leaving_mid_cascade_cancels_the_tier_call(stack: Stack) -> None:
    prompt = _starting_at_small(stack)
    before = stack.stats("mid")["cancelled"]
    body = {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": prompt}]}
    with pytest.raises(httpx.ReadTimeout):
        # small answers at once and is doubted; the caller gives up while mid is still thinking.
        httpx.post(
            stack.base + "/chat/completions",
            json=body,
            headers={"x-tiergate-latency-class": "batch"},
            timeout=httpx.Timeout(MID_DELAY_MS / 2000),
        )
    deadline = time.monotonic() + 5
    while stack.stats("mid")["cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stack.stats("mid")["cancelled"] == before + 1


def test_admin_routes_refuse_without_the_admin_key(stack: Stack) -> None:
    for headers in ({}, {"authorization": "Bearer not-the-admin-key"}):
        assert httpx.get(stack.root + "/admin/policy", headers=headers).status_code == 401
        assert httpx.put(stack.root + "/admin/policy", json={}, headers=headers).status_code == 401
        resp = httpx.post(stack.root + "/admin/route-preview", json={}, headers=headers)
        assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"


def test_a_policy_change_applies_to_the_next_request(stack: Stack) -> None:
    auth = {"authorization": f"Bearer {ADMIN}"}
    prompt = _starting_at_small(stack)
    policy = httpx.get(stack.root + "/admin/policy", headers=auth).json()
    assert policy["cascade"]["enabled"] is True
    bad = httpx.put(stack.root + "/admin/policy", json={**policy, "thresholds": [0.5]}, headers=auth)
    assert bad.status_code == 400 and "thresholds" in bad.json()["error"]["message"]
    off = {**policy, "cascade": {**policy["cascade"], "enabled": False}}
    try:
        assert httpx.put(stack.root + "/admin/policy", json=off, headers=auth).status_code == 200
        resp = stack.chat(prompt, headers={"x-tiergate-latency-class": "batch"})
        # Without the cascade: one tier, chosen by the profile's thresholds, no climb.
        assert resp.status_code == 200 and resp.headers["x-tiergate-escalations"] == "0"
        assert resp.headers["x-tiergate-tiers-tried"] == resp.headers["x-tiergate-tier"]
    finally:
        httpx.put(stack.root + "/admin/policy", json=policy, headers=auth)
    assert stack.chat(prompt, headers={"x-tiergate-latency-class": "batch"}).headers["x-tiergate-escalations"] != "0"


def test_an_edit_of_the_profile_file_is_picked_up(stack: Stack) -> None:
    auth = {"authorization": f"Bearer {ADMIN}"}
    original = stack.profile_path.read_text()
    data = yaml.safe_load(original)
    data["routing"]["cascade"]["max_escalations"] = 1
    try:
        stack.profile_path.write_text(yaml.safe_dump(data))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            got = httpx.get(stack.root + "/admin/policy", headers=auth).json()
            if got["cascade"]["max_escalations"] == 1:
                break
            time.sleep(0.2)
        assert got["cascade"]["max_escalations"] == 1
    finally:
        stack.profile_path.write_text(original)


def test_a_conversation_does_not_bounce_down_the_ladder(stack: Stack) -> None:
    prompt = _starting_at_small(stack)
    conv = {"x-tiergate-conversation-id": "conv-affinity-test", "x-tiergate-latency-class": "batch"}
    first = stack.chat(prompt, headers=conv)
    served = first.headers["x-tiergate-tier"]
    assert served != "small"  # rung 0 is always escalated
    later = stack.preview(prompt, **conv)
    assert later["tier"] == served and later["reason"] == "conversation-affinity"
    assert stack.preview(prompt, **{"x-tiergate-latency-class": "batch"})["tier"] == "small"


def _climbing_to_large(stack: Stack) -> dict[str, Any]:
    """A fixture row whose prompt starts at small and climbs to large in the batch class."""
    batch = {"x-tiergate-latency-class": "batch"}
    for row in ROWS:
        if stack.preview(row["prompt"], **batch)["tier"] != "small":
            continue
        if stack.chat(row["prompt"], headers=batch).headers["x-tiergate-tiers-tried"].endswith("large"):
            found: dict[str, Any] = row
            return found
    pytest.fail("no fixture prompt climbs from small to large")


def _stream_body(row: dict[str, Any]) -> dict[str, Any]:
    return {"model": "auto", "stream": True, "max_tokens": 64, "messages": [{"role": "user", "content": row["prompt"]}]}


def test_a_climb_to_the_top_tier_is_streamed_live(stack: Stack) -> None:
    """Buffer mode judges the cheaper tiers' answers; the last tier's needs no judge, so it streams."""
    batch = {"x-tiergate-latency-class": "batch"}
    row = _climbing_to_large(stack)
    body = _stream_body(row)
    with httpx.stream("POST", stack.base + "/chat/completions", json=body, headers=batch, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-tiergate-tiers-tried"] == "small,mid,large"
        # A buffered answer's cost is in the headers; a live stream's is known only at its end.
        assert "x-tiergate-cost-usd" not in resp.headers
        chunks = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    assert {c["model"] for c in chunks} == {"large"}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == row["responses"][MODELS["large"]]


def _inject(stack: Stack, tier: str, **faults: Any) -> None:
    resp = httpx.post(stack.tiers[tier].removesuffix("/v1") + "/fake/faults", json=faults)
    assert resp.status_code == 200, resp.text


def test_a_failing_tier_in_the_cascade_is_replaced_by_the_next_one_up(stack: Stack) -> None:
    prompt = _starting_at_small(stack)
    _inject(stack, "small", fail_next=3, status=500)  # the first try and both retries
    try:
        resp = stack.chat(prompt, headers={"x-tiergate-latency-class": "batch"})
    finally:
        _inject(stack, "small")
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-tiergate-tiers-tried"].split(",")[0] == "mid"  # small gave no answer
    metrics = httpx.get(stack.root + "/metrics").text
    assert 'tiergate_fallbacks_total{from_tier="small",to_tier="mid"}' in metrics
    assert 'tiergate_retries_total{reason="status_5xx",tier="small"} 2.0' in metrics


def test_a_streamed_climb_whose_top_tier_fails_gets_the_best_answer_so_far(stack: Stack) -> None:
    batch = {"x-tiergate-latency-class": "batch"}
    body = _stream_body(_climbing_to_large(stack))
    _inject(stack, "large", fail_next=3, status=503)
    try:
        resp = httpx.post(stack.base + "/chat/completions", json=body, headers=batch, timeout=30)
    finally:
        _inject(stack, "large")
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-cascade-stopped"] == "tier-failed"
    assert resp.headers["x-tiergate-tiers-tried"] == "small,mid"
    events = [line[6:] for line in resp.text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and not any('"error"' in e for e in events)
    served = resp.headers["x-tiergate-tier"]
    assert served in {"small", "mid"} and {json.loads(e)["model"] for e in events[:-1]} == {served}
