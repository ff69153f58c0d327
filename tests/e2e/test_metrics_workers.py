"""Metrics stay right with N gateway workers: every scrape, whichever worker answers it, counts all."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.procs import fake_upstream, gateway, write_profile

REQUESTS = 40


def _total(metrics: str, name: str) -> float:
    pattern = re.compile(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(metrics))


def test_two_workers_every_scrape_counts_every_request(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    spool = tmp_path / "tmp"
    spool.mkdir()
    with fake_upstream() as url:
        write_profile(profile, "test-fake", endpoints={"small": url, "medium": url, "large": url})
        with gateway(profile, env={"TMPDIR": str(spool)}, workers=2) as base:
            root = base.removesuffix("/v1")
            # The folder where the workers' metrics meet, fresh for this run.
            assert [p.name.startswith("tiergate-metrics-") for p in spool.iterdir()] == [True]
            body = {"model": "small", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}

            def one(_: int) -> int:
                # A new connection each time, so the kernel spreads them over both workers.
                return httpx.post(base + "/chat/completions", json=body, timeout=10).status_code

            with ThreadPoolExecutor(8) as pool:
                assert list(pool.map(one, range(REQUESTS))) == [200] * REQUESTS
            scrapes = [httpx.get(root + "/metrics", timeout=10).text for _ in range(8)]
            files = {p.name.rsplit("_", 1)[-1] for p in next(spool.iterdir()).glob("counter_*.db")}
    assert len(files) == 2, f"both workers should have counted requests, saw {files}"
    assert [_total(s, "tiergate_requests_total") for s in scrapes] == [REQUESTS] * len(scrapes)
    assert [_total(s, "tiergate_tokens_total") > 0 for s in scrapes] == [True] * len(scrapes)
    # Gauges combine across workers instead of one series per process.
    assert all('pid="' not in s for s in scrapes)
    assert all(_total(s, "tiergate_in_flight_requests") == 0 for s in scrapes)
    assert all(re.search(r'^tiergate_tier_ready\{tier="small"\} 1\.0$', s, re.MULTILINE) for s in scrapes)
    # The run's folder is removed when the gateway stops.
    assert list(spool.iterdir()) == []
