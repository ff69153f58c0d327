"""The replay tier: recorded answers over real HTTP, unknown prompts, synthetic logprobs, capacity."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.fake_upstream import FakeConfig, start_fake
from gateway.replay_tier import (
    SYNTHETIC_LOGPROBS_HEADER,
    BatchGate,
    QueueFull,
    ReplayConfig,
    ReplayError,
    ReplayTable,
    latency_plan,
    normalise_prompt,
    parse_latency_spec,
    token_count,
)
from router.offline.tables import load_outcomes

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "outcomes-small.jsonl"
SMALL = "mistralai/mistral-7b-chat"
ROWS = load_outcomes([FIXTURE])


def _row_with(score: float) -> Any:
    return next(r for r in ROWS if r.scores[SMALL] == score and SMALL in r.responses)


@asynccontextmanager
async def _serve(**replay: Any) -> AsyncIterator[str]:
    config = ReplayConfig(table=ReplayTable(ROWS, SMALL), **replay)
    _, runner, port = await start_fake(FakeConfig(models=[SMALL], replay=config))
    try:
        yield f"http://127.0.0.1:{port}/v1/chat/completions"
    finally:
        await runner.cleanup()


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with _serve() as u:
        yield u


def _chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": SMALL, "messages": [{"role": "user", "content": prompt}], **extra}


async def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


async def test_known_prompt_gets_the_recorded_answer_and_length_based_usage(url: str) -> None:
    row = ROWS[3]
    status, _, data = await _post(url, _chat(row.prompt))
    assert status == 200
    assert data["choices"][0]["message"]["content"] == row.responses[SMALL]
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["prompt_tokens"] == token_count(row.prompt)
    assert data["usage"]["completion_tokens"] == token_count(row.responses[SMALL])


async def test_prompt_matches_after_whitespace_changes_and_as_the_last_user_turn(url: str) -> None:
    row = ROWS[5]
    messy = "  " + row.prompt.replace("\n", "\r\n  ") + "\n"
    body = {
        "model": SMALL,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": messy}]},
        ],
    }
    status, _, data = await _post(url, body)
    assert status == 200
    assert data["choices"][0]["message"]["content"] == row.responses[SMALL]


async def test_unknown_prompt_is_an_openai_shaped_404(url: str) -> None:
    status, _, data = await _post(url, _chat("a prompt no benchmark ever asked"))
    assert status == 404
    assert data["error"]["code"] == "prompt_not_in_table"
    assert SMALL in data["error"]["message"]
    assert set(data["error"]) == {"message", "type", "param", "code"}


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(url: str) -> None:
    row = next(r for r in ROWS if len(r.responses[SMALL]) > 40)
    status, _, data = await _post(url, _chat(row.prompt, max_tokens=2))
    assert status == 200
    choice = data["choices"][0]
    assert choice["finish_reason"] == "length"
    assert row.responses[SMALL].startswith(choice["message"]["content"])
    assert len(choice["message"]["content"]) == 8


async def test_no_logprobs_unless_synthetic_ones_are_asked_for(url: str) -> None:
    _, headers, a = await _post(url, _chat(_row_with(1.0).prompt, logprobs=True))
    assert a["choices"][0].get("logprobs") is None and SYNTHETIC_LOGPROBS_HEADER not in headers


@pytest.fixture
async def synthetic_url() -> AsyncIterator[str]:
    async with _serve(synthetic_logprobs=True) as u:
        yield u


async def test_synthetic_logprobs_are_labelled_deterministic_and_follow_the_score(synthetic_url: str) -> None:
    url = synthetic_url
    right, wrong = _row_with(1.0), _row_with(0.0)
    s1, h1, a = await _post(url, _chat(right.prompt, logprobs=True, top_logprobs=2))
    _, _, a_again = await _post(url, _chat(right.prompt, logprobs=True, top_logprobs=2))
    _, _, b = await _post(url, _chat(wrong.prompt, logprobs=True))
    assert s1 == 200
    assert h1[SYNTHETIC_LOGPROBS_HEADER] == "synthetic-from-recorded-score"
    lp_right = [t["logprob"] for t in a["choices"][0]["logprobs"]["content"]]
    lp_wrong = [t["logprob"] for t in b["choices"][0]["logprobs"]["content"]]
    assert a == {**a_again, "id": a["id"], "created": a["created"]}
    assert "".join(t["token"] for t in a["choices"][0]["logprobs"]["content"]) == right.responses[SMALL]
    assert len(a["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 2
    assert min(lp_right) > max(lp_wrong)
    assert all(lp < 0 for lp in lp_right + lp_wrong)


async def test_stream_replays_the_text_in_sse_chunks_with_usage(url: str) -> None:
    row = next(r for r in ROWS if len(r.responses[SMALL]) > 20)
    body = _chat(row.prompt, stream=True, stream_options={"include_usage": True})
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = (await r.read()).decode()
    events = [line[len("data: ") :] for line in raw.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == row.responses[SMALL]
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) > 1
    assert chunks[-1]["usage"]["completion_tokens"] == token_count(row.responses[SMALL])


async def test_with_max_batch_one_the_second_concurrent_request_waits() -> None:
    async with _serve(ttft_ms=150.0, max_batch=1, max_queue=4) as url:
        t0 = time.perf_counter()

        async def timed(prompt: str, url: str = url, t0: float = t0) -> float:
            status, _, _ = await _post(url, _chat(prompt))
            assert status == 200
            return time.perf_counter() - t0

        first, second = sorted(await asyncio.gather(timed(ROWS[0].prompt), timed(ROWS[1].prompt)))
        assert first >= 0.14
        # Served one after the other: the later one waited for the whole first request.
        assert second >= 0.29


async def test_a_full_queue_answers_503_with_retry_after() -> None:
    async with _serve(ttft_ms=200.0, max_batch=1, max_queue=0) as url:
        results = await asyncio.gather(_post(url, _chat(ROWS[0].prompt)), _post(url, _chat(ROWS[1].prompt)))
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [200, 503]
        _, headers, data = next(r for r in results if r[0] == 503)
        assert headers["Retry-After"] == "1"
        assert data["error"]["code"] == "queue_full"


async def test_gate_is_fifo_and_a_cancelled_waiter_leaves_the_queue() -> None:
    gate = BatchGate(max_batch=1, max_queue=2)
    await gate.acquire()
    order: list[str] = []

    async def wait(name: str) -> None:
        await gate.acquire()
        order.append(name)

    a = asyncio.create_task(wait("a"))
    await asyncio.sleep(0)
    b = asyncio.create_task(wait("b"))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await gate.acquire()
    a.cancel()
    await asyncio.sleep(0)
    assert gate.waiting == 1
    gate.release()
    await b
    assert order == ["b"]
    assert gate.active == 1
    gate.release()
    assert gate.active == 0


def test_table_needs_the_model_and_names_the_ones_it_has() -> None:
    with pytest.raises(ReplayError, match="mistralai/mistral-7b-chat"):
        ReplayTable(ROWS, "no-such-model")
    table = ReplayTable(ROWS, "mistralai/Mistral-7B-Instruct-v0.1")  # an alias folds onto the key
    distinct = {normalise_prompt(r.prompt) for r in ROWS}
    assert len(table) == len(distinct)
    assert table.duplicates == len(ROWS) - len(distinct)
    assert normalise_prompt(" a\r\n\tb  ") == "a b"


def test_latency_specs_and_plans() -> None:
    assert parse_latency_spec("llama-3.3-70b@h100x4") == ("llama-3.3-70b", "h100-80gb", 4)
    assert parse_latency_spec("llama-3.2-1b@l4") == ("llama-3.2-1b", "l4", None)
    for bad in ("llama-3.2-1b", "nope@l4", "llama-3.2-1b@a100", "llama-3.2-1b@l4x0"):
        with pytest.raises(ReplayError):
            parse_latency_spec(bad)
    small, mid = latency_plan("llama-3.2-1b@l4", 8), latency_plan("llama-3.1-8b@l4", 8)
    large = latency_plan("llama-3.3-70b@h100x4", 8)
    assert large.gpus == 4
    # The same GPU runs the 8x larger model slower per token and costs more per token.
    assert small.decode_ms(1) < mid.decode_ms(1)
    assert small.ttft_ms(1000) < mid.ttft_ms(1000)
    assert small.usd_per_token < mid.usd_per_token < large.usd_per_token
    # A fuller batch reads more KV per step.
    assert mid.decode_ms(1) <= mid.decode_ms(4) <= mid.decode_ms(8)
    with pytest.raises(ReplayError, match="max-batch"):
        latency_plan("llama-3.1-8b@l4", 4096)
