"""The official openai client, unchanged, against the gateway over real HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from openai.types.chat import ChatCompletionToolParam

from tests.e2e.conftest import Stack


def _last_upstream_request(stack: Stack, tier: str) -> dict[str, Any]:
    sent: dict[str, Any] = orjson.loads(httpx.get(stack.fakes[tier].removesuffix("/v1") + "/fake/last-request").content)
    return sent


def test_auto_routes_and_every_response_says_where_it_went(healthy: Stack) -> None:
    raw = healthy.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Hi there"}]
    )
    reply = raw.parse()
    assert reply.model in {"small", "medium", "large"}
    assert raw.headers["x-tiergate-tier"] == reply.model
    assert len(raw.headers["x-tiergate-request-id"]) >= 8
    assert float(raw.headers["x-tiergate-overhead-ms"]) >= 0.0
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0


def test_easy_prompt_goes_to_small_and_hard_prompt_to_large(healthy: Stack) -> None:
    client = healthy.client()
    easy = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hello!"}])
    hard_text = (
        "Explain step by step and justify: derive the closed form of sum_{k=1}^n k^2 = n(n+1)(2n+1)/6, "
        "then analyze and compare two proofs, design a Python function `def f(n): return ...` and "
        "evaluate its trade-offs, and prove that 3 * 3 = 9. " * 20
    )
    hard = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": hard_text}])
    assert easy.model == "small"
    assert hard.model == "large"


def test_realtime_class_caps_the_tier_and_a_bad_class_is_a_400(healthy: Stack) -> None:
    client = healthy.client()
    hard_text = "Explain step by step, derive and prove the theorem, then design and evaluate code. " * 30
    capped = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": hard_text}],
        extra_headers={"x-tiergate-latency-class": "realtime"},
    )
    assert capped.model == "small"
    resp = httpx.post(
        healthy.base_url + "/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-tiergate-latency-class": "asap"},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "x-tiergate-latency-class"


def test_pinned_tier_rewrites_model_upstream_and_back(healthy: Stack) -> None:
    reply = healthy.client().chat.completions.create(
        model="large", messages=[{"role": "user", "content": "Hello"}], max_tokens=5
    )
    assert reply.model == "large"
    assert _last_upstream_request(healthy, "large")["model"] == "fake-large"
    assert reply.usage is not None and reply.usage.completion_tokens == 5


def test_openai_fields_and_unknown_fields_reach_the_tier_unchanged(healthy: Stack) -> None:
    tools: list[ChatCompletionToolParam] = [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    ]
    raw = healthy.client().chat.completions.with_raw_response.create(
        model="medium",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        temperature=0.3,
        top_p=0.9,
        stop=["\n\n"],
        seed=7,
        n=2,
        max_completion_tokens=9,
        logprobs=True,
        top_logprobs=2,
        tools=tools,
        tool_choice="auto",
        response_format={"type": "json_object"},
        user="user-42",
        extra_body={"repetition_penalty": 1.1, "guided_choice": ["a", "b"]},
    )
    sent = _last_upstream_request(healthy, "medium")
    for key, value in {
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "seed": 7,
        "n": 2,
        "max_completion_tokens": 9,
        "logprobs": True,
        "top_logprobs": 2,
        "tools": tools,
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "user": "user-42",
        "repetition_penalty": 1.1,
        "guided_choice": ["a", "b"],
    }.items():
        assert sent[key] == value, key
    assert raw.headers["x-tiergate-passed-through"] == "guided_choice,repetition_penalty"
    reply = raw.parse()
    assert len(reply.choices) == 2
    assert reply.choices[0].logprobs is not None and len(reply.choices[0].logprobs.content or []) == 9


def test_stream_relays_tokens_with_the_tier_name(healthy: Stack) -> None:
    stream = healthy.client().chat.completions.create(
        model="small", messages=[{"role": "user", "content": "Hello"}], stream=True, max_tokens=6
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The capital of France is Paris"
    assert {c.model for c in chunks} == {"small"}
    # The caller did not ask for usage: tiergate metered it but hides it, as OpenAI would.
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stream_include_usage_gives_a_final_usage_chunk(healthy: Stack) -> None:
    stream = healthy.client().chat.completions.create(
        model="large",
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=4,
        logprobs=True,
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    token_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert all(c.choices[0].logprobs is not None for c in token_chunks)


def test_models_lists_auto_and_every_tier(healthy: Stack) -> None:
    ids = [m.id for m in healthy.client().models.list()]
    assert ids == ["auto", "small", "medium", "large"]


def test_health_readiness_and_metrics(healthy: Stack) -> None:
    root = healthy.base_url.removesuffix("/v1")
    assert httpx.get(root + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(root + "/readyz")
    assert ready.status_code == 200 and ready.json()["tiers"]["small"]["ready"] is True
    healthy.client().chat.completions.create(model="small", messages=[{"role": "user", "content": "x"}])
    text = httpx.get(root + "/metrics").text
    assert 'tiergate_requests_total{status="200",tier="small"}' in text
    assert 'tiergate_tokens_total{direction="completion",tier="small"}' in text
    assert "tiergate_gateway_overhead_seconds_bucket" in text
    assert 'tiergate_router_info{policy="rule",version="heuristic-1"} 1.0' in text
