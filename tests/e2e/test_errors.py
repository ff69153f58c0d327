"""Every error path answers in OpenAI's error shape with the right status."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.conftest import Stack

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]


def _error(resp: httpx.Response) -> dict[str, Any]:
    body: dict[str, dict[str, Any]] = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_unknown_model_is_a_404_naming_the_choices(healthy: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        healthy.client().chat.completions.create(model="gpt-9", messages=HELLO)
    err = info.value.body
    assert isinstance(err, dict)
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert "auto" in err["message"] and "large" in err["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "auto", "messages": []}, "messages"),
        ({"model": "auto"}, "messages"),
        ({"messages": HELLO}, "model"),
        ({"model": "auto", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "auto", "messages": HELLO, "temperature": 5}, "temperature"),
        ({"model": "auto", "messages": HELLO, "temperature": "0.5"}, "temperature"),
        ({"model": "auto", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"model": "auto", "messages": HELLO, "n": "2"}, "n"),
        ({"model": "auto", "messages": HELLO, "stream": "yes"}, "stream"),
    ],
)
def test_invalid_requests_are_400_naming_the_field(healthy: Stack, body: dict[str, Any], param: str) -> None:
    resp = httpx.post(healthy.base_url + "/chat/completions", json=body)
    assert resp.status_code == 400
    err = _error(resp)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param


def test_inconsistent_fields_are_400(healthy: Stack) -> None:
    body = {"model": "auto", "messages": HELLO, "stream_options": {"include_usage": True}}
    resp = httpx.post(healthy.base_url + "/chat/completions", json=body)
    assert resp.status_code == 400 and "stream_options" in _error(resp)["message"]


def test_body_that_is_not_json_is_a_400(healthy: Stack) -> None:
    resp = httpx.post(
        healthy.base_url + "/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400 and _error(resp)["code"] == "invalid_json"
    resp = httpx.post(healthy.base_url + "/chat/completions", json=[1, 2])
    assert resp.status_code == 400


def test_body_over_the_limit_is_a_413_declared_or_chunked(healthy: Stack) -> None:
    big = {"model": "auto", "messages": [{"role": "user", "content": "x" * 70_000}]}
    resp = httpx.post(healthy.base_url + "/chat/completions", json=big)
    assert resp.status_code == 413 and _error(resp)["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 10_000
        yield b'"}]}'

    resp = httpx.post(healthy.base_url + "/chat/completions", content=chunks())
    assert resp.status_code == 413


def test_unknown_route_and_wrong_method_use_the_error_shape(healthy: Stack) -> None:
    resp = httpx.get(healthy.base_url + "/nothing-here")
    assert resp.status_code == 404 and _error(resp)["type"] == "invalid_request_error"
    resp = httpx.get(healthy.base_url + "/chat/completions")
    assert resp.status_code == 405 and _error(resp)["code"] == "method_not_allowed"


def test_tier_failure_is_a_502(faulty: Stack) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        faulty.client().chat.completions.create(model="small", messages=HELLO)
    assert info.value.status_code == 502
    assert isinstance(info.value.body, dict) and info.value.body["type"] == "upstream_error"


def test_tier_failure_before_the_first_streamed_byte_is_a_502_not_a_broken_stream(faulty: Stack) -> None:
    resp = httpx.post(faulty.base_url + "/chat/completions", json={"model": "small", "messages": HELLO, "stream": True})
    assert resp.status_code == 502
    assert resp.headers["content-type"].startswith("application/json")
    assert _error(resp)["type"] == "upstream_error"


def test_tier_timeout_is_a_504_within_the_configured_bound(faulty: Stack) -> None:
    start = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        faulty.client().chat.completions.create(model="medium", messages=HELLO)
    assert info.value.status_code == 504
    assert time.monotonic() - start < 3.0  # request_timeout_s is 1.0 in this profile


def test_tier_rejecting_a_request_stays_a_4xx_with_the_tiers_message(faulty: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        faulty.client().chat.completions.create(model="large", messages=HELLO, max_tokens=500)
    body = info.value.body
    assert isinstance(body, dict)
    assert body["param"] == "max_tokens" and "maximum context length" in body["message"]


def test_bad_requests_never_count_as_tier_failures(faulty: Stack) -> None:
    root = faulty.base_url.removesuffix("/v1")
    with pytest.raises(openai.BadRequestError):
        faulty.client().chat.completions.create(model="large", messages=HELLO, max_tokens=500)
    with pytest.raises(openai.APIStatusError):
        faulty.client().chat.completions.create(model="small", messages=HELLO)
    metrics = httpx.get(root + "/metrics").text
    assert 'tiergate_upstream_errors_total{kind="upstream_error",tier="small"}' in metrics
    assert 'tier="large"' not in "".join(
        line for line in metrics.splitlines() if line.startswith("tiergate_upstream_errors_total")
    )
