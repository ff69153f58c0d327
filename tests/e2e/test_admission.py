"""A tier at its KV budget overflows up the ladder, queues briefly, then answers 503 fast."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from tests.procs import fake_upstream, gateway, write_profile


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fake_upstream("--ttft-ms", "1500") as slow, fake_upstream() as fast:
        path = Path(tmp_path_factory.mktemp("tight")) / "profile.yaml"
        data = write_profile(
            path,
            "test-fake",
            endpoints={"small": slow, "medium": fast, "large": fast},
            gateway={"admission_max_queue": 1, "admission_queue_timeout_s": 0.3},
        )
        data["tiers"][0]["kv_capacity_tokens"] = 150
        path.write_text(yaml.safe_dump(data))
        with gateway(path) as base:
            yield base


def _post(base: str, model: str, **headers: str) -> httpx.Response:
    body = {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
    return httpx.post(base + "/chat/completions", json=body, headers=headers, timeout=10)


def test_full_tier_queues_then_refuses_with_retry_after(tight: str) -> None:
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(_post, tight, "small")
        time.sleep(0.3)
        queued = pool.submit(_post, tight, "small")
        time.sleep(0.05)
        start = time.monotonic()
        overflowing = _post(tight, "small")
        refused_fast_s = time.monotonic() - start
        results = [first.result(), queued.result()]
    assert results[0].status_code == 200
    assert results[1].status_code == 503 and results[1].headers["retry-after"]
    assert overflowing.status_code == 503 and refused_fast_s < 0.25
    assert overflowing.json()["error"]["type"] == "overloaded_error"


def test_auto_overflows_to_the_next_tier_instead_of_waiting(tight: str) -> None:
    with ThreadPoolExecutor(1) as pool:
        holder = pool.submit(_post, tight, "small")
        time.sleep(0.3)
        # A batch budget (10 s) leaves the slow small tier acceptable on latency, so only
        # admission can move the request (an interactive budget would move it up on the SLO).
        routed = _post(tight, "auto", **{"x-tiergate-latency-class": "batch"})
        assert holder.result().status_code == 200
    assert routed.status_code == 200
    assert routed.headers["x-tiergate-tier"] == "medium"
    metrics = httpx.get(tight.removesuffix("/v1") + "/metrics").text
    assert 'tiergate_admission_rejections_total{outcome="overflowed",tier="small"}' in metrics
    assert 'tiergate_admission_capacity_tokens{tier="small"} 150.0' in metrics
