"""Limits that follow the tier, through real processes: a long prompt moves to a tier whose context
fits, a prompt no tier holds is a 400 naming the limit, and max_tokens is capped to what is left."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.prompt_tokens import template_margin
from tests.procs import fake_upstream, gateway, write_profile
from tests.tiny_tokenizer import count, write_tokenizer

CONTEXTS = {"small": 512, "medium": 2048, "large": 4096}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """Three tiers of growing context over one fake, counted with a real tokenizer.json; the rule
    scorer always picks small (threshold 1.0), so only the context can move a request."""
    tmp = Path(tmp_path_factory.mktemp("limits"))
    tok = write_tokenizer(tmp / "tok")
    with fake_upstream() as fake:
        path = tmp / "profile.yaml"
        data = write_profile(
            path,
            "test-fake",
            endpoints=dict.fromkeys(CONTEXTS, fake),
            routing={"thresholds": [1.0, 1.0]},
        )
        for tier in data["tiers"]:
            tier["context_length_tokens"] = CONTEXTS[tier["name"]]
            tier["tokenizer"] = str(tok)
        path.write_text(yaml.safe_dump(data))
        with gateway(path) as base:
            yield base, fake, tok


def _chat(base: str, text: str, model: str = "auto", **fields: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **fields}
    return httpx.post(base + "/chat/completions", json=body, timeout=10)


def _last_request(fake: str) -> dict[str, Any]:
    got: dict[str, Any] = httpx.get(fake.removesuffix("/v1") + "/fake/last-request").json()
    return got


# About 900 tokens of this tokenizer: too long for small (512), fine for medium (2048).
LONG = "The capital of France is Paris. " * 60


def test_a_prompt_longer_than_the_chosen_tiers_context_moves_to_a_tier_that_fits(
    limited: tuple[str, str, Path],
) -> None:
    base, _, tok = limited
    assert CONTEXTS["small"] < count(tok, LONG) < CONTEXTS["medium"]
    short = _chat(base, "Hi", max_tokens=8)
    assert short.status_code == 200 and short.headers["x-tiergate-tier"] == "small"
    moved = _chat(base, LONG, max_tokens=8)
    assert moved.status_code == 200, moved.text
    assert moved.headers["x-tiergate-tier"] == "medium"
    metrics = httpx.get(base.removesuffix("/v1") + "/metrics").text
    assert 'tiergate_routing_decisions_total{reason="context-fit",tier="medium"}' in metrics


def test_a_prompt_no_tier_holds_is_a_400_naming_the_limit(limited: tuple[str, str, Path]) -> None:
    base, _, _ = limited
    refused = _chat(base, "The capital of France is Paris. " * 400)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (
        "messages",
        "context_length_exceeded",
        "invalid_request_error",
    )
    assert "4096" in error["message"]


def test_a_pinned_tier_too_small_for_the_prompt_is_a_400_not_a_move(limited: tuple[str, str, Path]) -> None:
    base, _, _ = limited
    refused = _chat(base, LONG, model="small")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "context_length_exceeded" and "512" in refused.json()["error"]["message"]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_an_absurd_max_tokens_is_capped_and_passed_on_capped(limited: tuple[str, str, Path], field: str) -> None:
    base, fake, tok = limited
    text = "Explain why the sky is blue, step by step."
    answer = _chat(base, text, model="small", **{field: 1_000_000_000})
    assert answer.status_code == 200, answer.text
    expected = CONTEXTS["small"] - count(tok, text) - template_margin(1)
    assert int(answer.headers["x-tiergate-max-tokens-capped"]) == expected
    sent = _last_request(fake)
    assert sent[field] == expected
    other = "max_tokens" if field == "max_completion_tokens" else "max_completion_tokens"
    assert other not in sent


def test_a_max_tokens_that_fits_is_passed_on_unchanged_and_not_reported(limited: tuple[str, str, Path]) -> None:
    base, fake, _ = limited
    answer = _chat(base, "Hi", model="small", max_tokens=100)
    assert answer.status_code == 200
    assert "x-tiergate-max-tokens-capped" not in answer.headers
    assert _last_request(fake)["max_tokens"] == 100


def test_a_streamed_request_is_capped_the_same_way(limited: tuple[str, str, Path]) -> None:
    base, fake, tok = limited
    text = "Hi"
    body = {"model": "small", "stream": True, "max_tokens": 10**9, "messages": [{"role": "user", "content": text}]}
    with httpx.stream("POST", base + "/chat/completions", json=body, timeout=10) as answer:
        events = [line for line in answer.iter_lines() if line.startswith("data: ")]
        capped = answer.headers["x-tiergate-max-tokens-capped"]
    assert answer.status_code == 200 and events[-1] == "data: [DONE]"
    expected = CONTEXTS["small"] - count(tok, text) - template_margin(1)
    assert int(capped) == expected == _last_request(fake)["max_tokens"]


def test_an_absurd_max_tokens_reserves_one_context_not_the_whole_budget(tmp_path: Path) -> None:
    """Budget 2,000 tokens, context 512: two callers asking for 1e9 tokens are served side by side.

    Reserving what they asked for (clamped to the budget) would admit one at a time."""
    with fake_upstream("--ttft-ms", "400") as fake:
        path = tmp_path / "profile.yaml"
        data = write_profile(path, "test-fake", endpoints=dict.fromkeys(CONTEXTS, fake))
        data["tiers"][0].update({"context_length_tokens": 512, "kv_capacity_tokens": 2000})
        path.write_text(yaml.safe_dump(data))
        with gateway(path) as base, ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: _chat(base, "Hi", model="small", max_tokens=10**9), range(2)))
        stats = httpx.get(fake.removesuffix("/v1") + "/fake/stats").json()
    assert [a.status_code for a in answers] == [200, 200]
    assert stats["max_in_flight"] == 2, stats


def test_the_model_list_shows_the_context_each_tier_is_held_to(limited: tuple[str, str, Path]) -> None:
    base, _, _ = limited
    listed = {m["id"]: m for m in httpx.get(base + "/models").json()["data"]}
    assert {name: listed[name]["tiergate"]["context_length_tokens"] for name in CONTEXTS} == CONTEXTS


def test_a_fallback_skips_a_tier_whose_context_is_too_small(tmp_path: Path) -> None:
    """large fails; falling back down, medium (512) cannot hold the prompt, so small (2,048) answers."""
    tok = write_tokenizer(tmp_path / "tok")
    contexts = {"small": 2048, "medium": 512, "large": 4096}
    with fake_upstream() as ok, fake_upstream("--failure-rate", "1") as broken:
        path = tmp_path / "profile.yaml"
        data = write_profile(
            path,
            "test-fake",
            endpoints={"small": ok, "medium": ok, "large": broken},
            routing={"thresholds": [0.0, 0.0]},  # the rule scorer picks large
        )
        for tier in data["tiers"]:
            tier.update({"context_length_tokens": contexts[tier["name"]], "tokenizer": str(tok)})
        path.write_text(yaml.safe_dump(data))
        with gateway(path) as base:
            answer = _chat(base, LONG, max_tokens=8)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-tiergate-tier"] == "small"
