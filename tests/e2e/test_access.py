"""Access over real processes: hashed keys, per-key rate limits and spend budgets, the admin key.

One gateway holds a key per guarantee, so the tests do not draw on each other's limits.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import openai
import pytest
import yaml

from deployments.keys import hash_key, key_id
from tests.e2e.conftest import Stack
from tests.procs import fake_upstream, gateway_process, write_profile

HASHED = "sk-hashed-key-0001"
RPM = "sk-rpm-limited-0002"
TPM = "sk-tpm-limited-0003"
BUDGET = "sk-budget-key-0004"
TEAM_A = "sk-team-member-0005"
TEAM_B = "sk-team-member-0006"
ADMIN = "admin-key-hashed-0123456789"
CHAT = {"model": "small", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}
TINY_USD = 1e-9  # below what one answer costs at 1 USD per million tokens


@pytest.fixture(scope="module")
def access(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    gateway = {
        "api_keys": [hash_key(HASHED)],
        "keys": [
            {"key": hash_key(RPM), "requests_per_minute": 3},
            {"key": TPM, "tokens_per_minute": 5},
            {"key": hash_key(BUDGET), "budget_usd": TINY_USD},
            {"key": hash_key(TEAM_A), "team": "research"},
            {"key": hash_key(TEAM_B), "team": "research"},
        ],
        "teams": {"research": {"budget_usd": TINY_USD}},
        "admin_key": hash_key(ADMIN),
    }
    with fake_upstream() as fake:
        path = tmp_path_factory.mktemp("access") / "profile.yaml"
        data = write_profile(
            path, "test-fake", endpoints={"small": fake, "medium": fake, "large": fake}, gateway=gateway
        )
        for tier in data["tiers"]:
            # Token prices of their own, so every answer has a cost to charge.
            tier["price_per_million_prompt_tokens_usd"] = tier["price_per_million_output_tokens_usd"] = 1.0
        path.write_text(yaml.safe_dump(data))
        with gateway_process(path) as (base, _):
            stack = Stack(base, {"small": fake})
            yield stack
            stack.close()


def _chat(stack: Stack, key: str) -> httpx.Response:
    return httpx.post(stack.base_url + "/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"})


def _metric(stack: Stack, name: str, **labels: str) -> float | None:
    text = httpx.get(stack.base_url.removesuffix("/v1") + "/metrics").text
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def _assert_429(resp: httpx.Response, error_type: str, code: str) -> int:
    assert resp.status_code == 429, resp.text
    error = resp.json()["error"]
    assert (error["type"], error["code"]) == (error_type, code)
    assert set(error) == {"message", "type", "param", "code"}
    retry_after = resp.headers["retry-after"]
    assert re.fullmatch(r"[1-9][0-9]*", retry_after)
    return int(retry_after)


def test_a_hashed_key_is_accepted_and_its_hash_is_not_a_key(access: Stack) -> None:
    reply = access.client(api_key=HASHED).chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert reply.choices[0].message.content
    assert _chat(access, hash_key(HASHED)).status_code == 401


def test_a_wrong_key_is_401_with_www_authenticate(access: Stack) -> None:
    resp = _chat(access, "sk-not-a-key-999999")
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert resp.json()["error"]["code"] == "invalid_api_key"


def test_requests_per_minute_refuse_with_429_and_retry_after(access: Stack) -> None:
    for _ in range(3):
        assert _chat(access, RPM).status_code == 200
    wait = _assert_429(_chat(access, RPM), "requests", "rate_limit_exceeded")
    assert wait <= 20  # one request of three a minute refills in 20 s
    assert _metric(access, "tiergate_ratelimit_rejections_total", key=key_id(RPM), limit="requests") == 1.0
    # Other keys are not held to this one's limit.
    assert _chat(access, HASHED).status_code == 200


def test_the_official_client_sees_a_rate_limit_error(access: Stack) -> None:
    # The key's three requests a minute went to the test above (or go here first).
    for _ in range(3):
        _chat(access, RPM)
    with pytest.raises(openai.RateLimitError):
        access.client(api_key=RPM).chat.completions.create(**CHAT)  # type: ignore[call-overload]


def test_tokens_per_minute_are_charged_with_what_the_answer_used(access: Stack) -> None:
    first = _chat(access, TPM)
    assert first.status_code == 200
    used = first.json()["usage"]["total_tokens"]
    assert used > 5  # this one answer overdraws the 5-token bucket
    wait = _assert_429(_chat(access, TPM), "tokens", "rate_limit_exceeded")
    # The debt refills at 5 tokens a minute, 12 s a token.
    assert wait == pytest.approx((used - 5) * 12.0, abs=2.0)


def test_a_spent_budget_is_429_insufficient_quota_and_shows_in_metrics(access: Stack) -> None:
    first = _chat(access, BUDGET)
    assert first.status_code == 200
    assert float(first.headers["x-tiergate-cost-usd"]) > TINY_USD
    wait = _assert_429(_chat(access, BUDGET), "insufficient_quota", "insufficient_quota")
    assert wait <= 86400  # until the next UTC day
    assert _metric(access, "tiergate_key_budget_remaining_usd", key=key_id(BUDGET)) == 0.0
    assert _metric(access, "tiergate_ratelimit_rejections_total", key=key_id(BUDGET), limit="spend") == 1.0
    assert BUDGET not in httpx.get(access.base_url.removesuffix("/v1") + "/metrics").text


def test_a_team_budget_is_shared_by_its_keys(access: Stack) -> None:
    assert _metric(access, "tiergate_key_budget_remaining_usd", key=key_id(TEAM_B)) == TINY_USD
    assert _chat(access, TEAM_A).status_code == 200
    refused = _chat(access, TEAM_B)  # B spent nothing; A spent the team's budget
    _assert_429(refused, "insufficient_quota", "insufficient_quota")
    assert "research" in refused.json()["error"]["message"]


def test_a_hashed_admin_key_opens_admin_routes_and_an_api_key_does_not(access: Stack) -> None:
    root = access.base_url.removesuffix("/v1")
    assert httpx.get(root + "/admin/policy", headers={"authorization": f"Bearer {ADMIN}"}).status_code == 200
    refused = httpx.get(root + "/admin/policy", headers={"authorization": f"Bearer {HASHED}"})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")


def test_n_workers_together_never_let_a_key_past_its_limit(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each of two workers enforces half of 4 requests a minute: of 12 requests at most 4 are answered."""
    with fake_upstream() as fake:
        path = tmp_path_factory.mktemp("workers") / "profile.yaml"
        endpoints = {"small": fake, "medium": fake, "large": fake}
        write_profile(
            path, "test-fake", endpoints=endpoints, gateway={"keys": [{"key": RPM, "requests_per_minute": 4}]}
        )
        with gateway_process(path, None, "--workers", "2") as (base, _):
            stack = Stack(base, {"small": fake})
            # A new connection each time, so the requests spread over both workers.
            statuses = [_chat(stack, RPM).status_code for _ in range(12)]
    assert set(statuses) <= {200, 429}
    assert 1 <= statuses.count(200) <= 4, statuses
