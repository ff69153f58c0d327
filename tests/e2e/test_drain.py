"""Graceful drain, proven on a real `tiergate serve` process over a slow fake tier.

On SIGTERM the gateway answers /readyz 503 at once, serves what is in flight and what still
arrives, and exits within its drain period; an idle gateway leaves early unless told to hold.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.procs import Proc, fake_upstream, gateway_process, write_profile

CHAT = {"model": "small", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}


@contextmanager
def _served(tmp_path: Path, ttft_ms: int, *serve_args: str, **gateway_settings: Any) -> Iterator[tuple[str, Proc]]:
    with fake_upstream("--ttft-ms", str(ttft_ms)) as fake:
        path = tmp_path / "profile.yaml"
        endpoints = {"small": fake, "medium": fake, "large": fake}
        write_profile(path, "test-fake", endpoints=endpoints, gateway={"request_timeout_s": 30.0, **gateway_settings})
        with gateway_process(path, None, *serve_args) as (base, proc):
            # The tiers must be probed ready first, so a 503 below can only mean "draining".
            _wait_ready(base.removesuffix("/v1"))
            yield base.removesuffix("/v1"), proc


def _wait_ready(root: str) -> None:
    deadline = time.monotonic() + 10.0
    while httpx.get(root + "/readyz").status_code != 200:
        assert time.monotonic() < deadline, "gateway never became ready"
        time.sleep(0.05)


class _Call(threading.Thread):
    """One chat request in the background; `status` is its HTTP status, or the error that ended it."""

    def __init__(self, root: str) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.status: int | str | None = None
        self.done_at: float | None = None

    def run(self) -> None:
        try:
            self.status = httpx.post(self.root + "/v1/chat/completions", json=CHAT, timeout=30.0).status_code
        except httpx.HTTPError as err:
            self.status = type(err).__name__
        self.done_at = time.monotonic()


def _wait_exit(proc: Proc, timeout_s: float) -> float:
    """Seconds until the process exited (fails the test past `timeout_s`)."""
    t0 = time.monotonic()
    proc.popen.wait(timeout=timeout_s)
    return time.monotonic() - t0


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_in_flight_and_new_requests_then_exits_early(tmp_path: Path, workers: int) -> None:
    with _served(tmp_path, 1500, "--workers", str(workers), drain_period_s=8.0) as (root, proc):
        # With two workers the parent passes SIGTERM on to each; each drains its own requests.
        calls = [_Call(root) for _ in range(2 * workers)]
        for call in calls:
            call.start()
        time.sleep(0.3)  # the requests are now waiting on the slow tier
        signalled = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        # uvicorn's --workers supervisor looks at its signals every 0.5 s before passing them on.
        time.sleep(0.2 if workers == 1 else 1.0)
        ready = httpx.get(root + "/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "draining"
        assert ready.headers["connection"] == "close"  # keep-alive clients move on
        # A request arriving during the drain is still served.
        late = httpx.post(root + "/v1/chat/completions", json=CHAT, timeout=30.0)
        assert late.status_code == 200, late.text
        for call in calls:
            call.join(timeout=10.0)
        assert [c.status for c in calls] == [200] * len(calls)
        # Nothing left in flight: it stops well before the 8 s period.
        _wait_exit(proc, timeout_s=8.0)
        assert time.monotonic() - signalled < 6.0


def test_a_held_drain_keeps_listening_for_the_whole_period_then_aborts_what_is_left(tmp_path: Path) -> None:
    # The flag k8s/gateway.yaml passes; the profile field gateway.drain_wait_full_period does the same.
    with _served(tmp_path, 20000, "--drain-wait-full-period", drain_period_s=2.0) as (root, proc):
        signalled = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # Idle, yet still listening: the balancer may not have noticed yet.
        assert proc.popen.poll() is None
        assert httpx.get(root + "/readyz").status_code == 503
        stuck = _Call(root)  # arrives in the window, and outlasts it
        stuck.start()
        _wait_exit(proc, timeout_s=6.0)
        elapsed = time.monotonic() - signalled
        assert 2.0 <= elapsed < 5.0, elapsed  # the period, then at most the abort bound and shutdown
        stuck.join(timeout=5.0)
        assert stuck.status != 200  # the request past the drain was aborted, not answered
