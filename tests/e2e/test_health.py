"""Health and readiness are separate: /healthz says the process answers, /readyz whether any tier can."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.procs import free_port, gateway, running, tiergate_cmd, write_profile


def _wait_status(url: str, status: int, tier: str, ready: bool, timeout_s: float = 10.0) -> httpx.Response:
    """Poll until the answer has `status` and the tier's probe has judged it `ready` (or time runs out)."""
    deadline = time.monotonic() + timeout_s
    resp = httpx.get(url)
    while time.monotonic() < deadline:
        if resp.status_code == status and resp.json()["tiers"][tier]["ready"] is ready:
            break
        time.sleep(0.1)
        resp = httpx.get(url)
    return resp


def test_readiness_is_false_while_no_tier_is_usable_and_health_stays_true(tmp_path: Path) -> None:
    ports = {tier: free_port() for tier in ("small", "medium", "large")}
    path = tmp_path / "profile.yaml"
    write_profile(path, "test-fake", endpoints={t: f"http://127.0.0.1:{p}/v1" for t, p in ports.items()})
    with gateway(path) as base:
        root = base.removesuffix("/v1")
        assert httpx.get(root + "/healthz").json() == {"status": "ok"}
        down = _wait_status(root + "/readyz", 503, "large", ready=False)
        body = down.json()
        assert down.status_code == 503 and body["status"] == "not ready"
        assert all(tier["ready"] is False and tier["error"] for tier in body["tiers"].values())
        assert httpx.get(root + "/healthz").status_code == 200
        # One tier coming up is enough: readiness follows it without a restart.
        small = ports["small"]
        fake = tiergate_cmd("fake-upstream", "--port", str(small))
        with running(fake, f"http://127.0.0.1:{small}/health"):
            up = _wait_status(root + "/readyz", 200, "small", ready=True)
            assert up.status_code == 200 and up.json()["tiers"]["small"]["ready"] is True
            assert up.json()["tiers"]["large"]["ready"] is False
