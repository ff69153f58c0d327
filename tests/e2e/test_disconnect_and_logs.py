"""A caller who leaves cancels the tier's work; the access log never carries prompts or keys."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.procs import Proc, fake_upstream, free_port, running, tiergate_cmd, write_profile

# (gateway base URL, slow tier URL, dribbling tier URL, the gateway process)
SlowStack = tuple[str, str, str, Proc]


def _stats(fake_url: str) -> dict[str, Any]:
    stats: dict[str, Any] = orjson.loads(httpx.get(fake_url.removesuffix("/v1") + "/fake/stats").content)
    return stats


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlowStack]:
    with (
        fake_upstream("--ttft-ms", "3000") as slow,
        fake_upstream("--token-delay-ms", "200", "--reply-tokens", "50") as dribble,
    ):
        path = Path(tmp_path_factory.mktemp("slow")) / "profile.yaml"
        write_profile(path, "test-fake", endpoints={"small": slow, "medium": dribble, "large": dribble})
        port = free_port()
        cmd = tiergate_cmd("serve", "--profile", str(path), "--port", str(port), "--log-level", "info")
        with running(cmd, f"http://127.0.0.1:{port}/healthz") as proc:
            yield f"http://127.0.0.1:{port}/v1", slow, dribble, proc


def test_disconnect_while_waiting_cancels_the_upstream_request(slow_stack: SlowStack) -> None:
    base, slow, _, _ = slow_stack
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            base + "/chat/completions",
            json={"model": "small", "messages": [{"role": "user", "content": "hi"}]},
            timeout=httpx.Timeout(5.0, read=0.5),
        )
    assert _wait_for(lambda: _stats(slow)["cancelled"] == 1), _stats(slow)
    assert _stats(slow)["completed"] == 0


def test_disconnect_mid_stream_cancels_the_upstream_stream(slow_stack: SlowStack) -> None:
    base, _, dribble, _ = slow_stack
    body = {"model": "medium", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", base + "/chat/completions", json=body, timeout=10.0) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        got = [next(lines) for _ in range(4)]
        assert any(line.startswith("data: ") for line in got)
    assert _wait_for(lambda: _stats(dribble)["cancelled"] >= 1), _stats(dribble)
    assert _stats(dribble)["completed"] == 0


def test_access_log_has_one_line_per_request_and_never_the_prompt(slow_stack: SlowStack) -> None:
    base, _, _, proc = slow_stack
    secret_prompt = "my-very-private-prompt-4711"
    resp = httpx.post(
        base + "/chat/completions",
        json={"model": "large", "max_tokens": 2, "messages": [{"role": "user", "content": secret_prompt}]},
        headers={"authorization": "Bearer sk-should-not-appear-42"},
        timeout=10.0,
    )
    assert resp.status_code == 200
    request_id = resp.headers["x-tiergate-request-id"]
    # Access lines are written in batches every 250 ms; wait for ours rather than for shutdown.
    assert _wait_for(lambda: request_id in proc.output(), timeout_s=10.0)
    proc.stop()
    out = proc.output()
    assert secret_prompt not in out and "sk-should-not-appear-42" not in out
    lines = [line for line in out.splitlines() if request_id in line]
    assert len(lines) == 1
    record = orjson.loads(lines[0][lines[0].index("{") :])
    assert record["status"] == 200 and record["tier"] == "large" and record["completion_tokens"] == 2
