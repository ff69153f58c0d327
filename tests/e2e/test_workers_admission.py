"""With `tiergate serve --workers 2`, the tier is never offered more than its KV budget.

Each worker process admits against half of the tier's budget (gateway/admission.py), so whichever
worker a request lands on, the two together stay within the budget. The fake tier records the most
requests and tokens (prompt + max_tokens, what a KV cache reserves) it ever held at once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.procs import fake_upstream, free_port, running, tiergate_cmd, wait_for_workers, write_profile

CAPACITY_TOKENS = 1200
MAX_TOKENS = 200
REQUESTS = 24


def _chat(base: str) -> int:
    body = {"model": "small", "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": "Hi"}]}
    # A fresh connection per request, so the two worker processes both accept some.
    return httpx.post(base + "/chat/completions", json=body, timeout=30).status_code


def test_two_workers_never_offer_the_tier_more_than_its_budget(tmp_path: Path) -> None:
    with fake_upstream("--ttft-ms", "300") as fake:
        path = tmp_path / "profile.yaml"
        data = write_profile(
            path,
            "test-fake",
            endpoints={"small": fake, "medium": fake, "large": fake},
            gateway={"admission_max_queue": 64, "admission_queue_timeout_s": 20.0, "request_timeout_s": 10.0},
        )
        data["tiers"][0]["kv_capacity_tokens"] = CAPACITY_TOKENS
        path.write_text(yaml.safe_dump(data))
        port = free_port()
        cmd = tiergate_cmd("serve", "--profile", str(path), "--port", str(port), "--workers", "2")
        spool = tmp_path / "tmp"
        spool.mkdir()
        with running(cmd, f"http://127.0.0.1:{port}/healthz", env={"PYTHONUNBUFFERED": "1", "TMPDIR": str(spool)}):
            wait_for_workers(spool, 2)
            base = f"http://127.0.0.1:{port}/v1"
            with ThreadPoolExecutor(REQUESTS) as pool:
                statuses = list(pool.map(lambda _: _chat(base), range(REQUESTS)))
        stats: dict[str, Any] = httpx.get(fake.removesuffix("/v1") + "/fake/stats").json()
    assert statuses.count(200) == REQUESTS, statuses
    # Each request reserves its prompt + 200 in the gateway (a little more than the fake counts), so
    # one process's half admits 2 at a time; the tier never holds more than the budget...
    assert stats["max_in_flight_tokens"] <= CAPACITY_TOKENS, stats
    # ...and more than one process's half was in use at once: both workers were admitting, so a
    # process that admitted against the whole budget (4 each, 8 together) would have shown here.
    assert stats["max_in_flight"] >= 3, stats


def test_one_worker_admits_up_to_the_whole_budget(tmp_path: Path) -> None:
    """The control: a single process uses the whole budget (4 at once), not a half."""
    with fake_upstream("--ttft-ms", "300") as fake:
        path = tmp_path / "profile.yaml"
        data = write_profile(path, "test-fake", endpoints={"small": fake, "medium": fake, "large": fake})
        data["tiers"][0]["kv_capacity_tokens"] = CAPACITY_TOKENS
        data["gateway"].update({"admission_queue_timeout_s": 20.0, "request_timeout_s": 10.0})
        path.write_text(yaml.safe_dump(data))
        port = free_port()
        cmd = tiergate_cmd("serve", "--profile", str(path), "--port", str(port), "--workers", "1")
        with running(cmd, f"http://127.0.0.1:{port}/healthz"):
            base = f"http://127.0.0.1:{port}/v1"
            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(lambda _: _chat(base), range(8)))
        stats: dict[str, Any] = httpx.get(fake.removesuffix("/v1") + "/fake/stats").json()
    assert statuses.count(200) == 8
    assert stats["max_in_flight"] == 4 and stats["max_in_flight_tokens"] <= CAPACITY_TOKENS, stats
