"""`tiergate replay` end to end: three replay tiers and a gateway as real processes, on the fixture."""

from __future__ import annotations

import json
import subprocess

from tests.procs import REPO, tiergate_cmd

FIXTURE = REPO / "tests" / "fixtures" / "outcomes-small.jsonl"
KEYS = ("quality_ratio", "cost_ratio", "slo_attainment", "escalation_rate", "p50_ttft_ms", "p99_ttft_ms")


def test_replay_reports_policy_and_baselines_in_range() -> None:
    cmd = tiergate_cmd(
        "replay",
        "--data", str(FIXTURE),
        "--small", "mistralai/mistral-7b-chat",
        "--mid", "mistralai/mixtral-8x7b-chat",
        "--large", "gpt-4-1106-preview",
        "--rate", "30", "--duration-s", "0.8", "--seed", "7", "--json",
    )  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replay: always_large" in done.stderr  # progress goes to stderr, JSON alone to stdout
    report = json.loads(done.stdout)
    runs = {"policy": report, **report["baselines"]}
    assert set(report["baselines"]) == {"always_small", "always_mid", "always_large", "random"}
    for name, run in runs.items():
        for key in KEYS:
            assert key in run, (name, key)
        assert run["requests"] == report["setup"]["arrivals_per_run"] > 0
        assert 0.0 <= run["slo_attainment"] <= 1.0
        assert 0.0 <= run["escalation_rate"] <= 1.0
        assert 0.0 <= run["p50_ttft_ms"] <= run["p99_ttft_ms"]
        assert run["quality_ratio"] >= 0.0 and run["cost_ratio"] >= 0.0
    base = report["baselines"]
    assert base["always_large"]["quality_ratio"] == 1.0 and base["always_large"]["cost_ratio"] == 1.0
    # Pinned runs are answered by their tier only, and the planner prices the tiers in ladder order.
    assert set(base["always_small"]["tier_share"]) == {"small"}
    assert set(base["always_large"]["tier_share"]) == {"large"}
    assert base["always_small"]["cost_ratio"] < base["always_mid"]["cost_ratio"] < 1.0
    # The fixture's small model is wrong far more often than the large one.
    assert base["always_small"]["quality_ratio"] < 0.8
