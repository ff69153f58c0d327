"""The operator's loop with token logprobs, end to end: collect -> calibrate -> serve -> the live cascade
decides as the calibrated verifier judged.

Replay tiers answer with the fixture's recorded answers and SYNTHETIC logprobs derived from the
recorded score (labelled so by the replay tier): a strong signal by construction. What is tested is
the plumbing, not the signal: the gateway's sample carries the tiers' logprobs, calibration learns a
head on them, and the live gateway, given the artifact, escalates exactly where that head says.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from gateway.cli import app
from router.runtime.artifact import load_model
from router.runtime.verifier import Verifier
from tests.e2e.replay_fixture import FIXTURE, MODELS, PRICE, ROWS
from tests.procs import fake_upstream, gateway

MAX_TOKENS = 64
runner = CliRunner()


def _profile(endpoints: dict[str, str], routing: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "logprob-loop",
        "tiers": [
            {
                "name": tier,
                "endpoint": endpoints[tier],
                "upstream_model": MODELS[tier],
                "router_rung": tier,
                "context_length_tokens": 32768,
                "price_per_million_prompt_tokens_usd": PRICE[tier],
                "price_per_million_output_tokens_usd": PRICE[tier],
            }
            for tier in MODELS
        ],
        "routing": routing,
        "gateway": {"access_log": False},
    }


@pytest.fixture(scope="module")
def tiers() -> Iterator[dict[str, str]]:
    def replay(model: str) -> Any:
        return fake_upstream("--replay", str(FIXTURE), "--model", model, "--synthetic-logprobs")

    with replay(MODELS["small"]) as small, replay(MODELS["mid"]) as mid, replay(MODELS["large"]) as large:
        yield {"small": small, "mid": mid, "large": large}


def _serve(tmp: Path, name: str, tiers: dict[str, str], routing: dict[str, Any]) -> Any:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(_profile(tiers, routing)))
    return gateway(path)


def test_the_live_cascade_escalates_where_the_calibrated_verifier_says(tiers: dict[str, str], tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    labelled = [
        {"id": r["id"], "prompt": r["prompt"], "scores": {t: r["scores"][m] for t, m in MODELS.items()}} for r in ROWS
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in labelled))
    sample, artifact = tmp_path / "sample.jsonl", tmp_path / "mine.skops"
    with _serve(tmp_path, "collect", tiers, {"policy": "rule"}) as base:
        args = ["--prompts", str(prompts), "--out", str(sample), "--max-tokens", str(MAX_TOKENS), "--url", base]
        collected = runner.invoke(
            app, ["router", "collect", *args, "--tier", "small", "--tier", "mid", "--tier", "large"]
        )
    assert collected.exit_code == 0, collected.output
    rows = [json.loads(line) for line in sample.read_text().splitlines()]
    assert all(set(r["logprobs"]) == set(MODELS) for r in rows)

    ladder = ["--small", "small", "--mid", "mid", "--large", "large"]
    out_args = ["--out", str(artifact), "--bootstrap", "20"]
    calibrated = runner.invoke(
        app,
        ["router", "calibrate", "--data", str(sample), *ladder, "--target-quality", "0.95", *out_args],
    )
    assert calibrated.exit_code == 0, calibrated.output
    summary = json.loads(calibrated.stdout[calibrated.stdout.index("{") :])
    assert summary["policy"] == "router" and summary["decided_on"] == "agreement"
    assert summary["verifier_heads"][-1]["head"].startswith("refit")  # learned from the logprobs

    verifier = Verifier(load_model(artifact))
    routing = {"policy": "learned", "scorer_artifact": str(artifact), "cascade": {"enabled": True}}
    paths: list[list[str]] = []
    with _serve(tmp_path, "serve", tiers, routing) as base:
        for row in rows:
            resp = httpx.post(
                base + "/chat/completions",
                json={
                    "model": "auto",
                    "max_tokens": MAX_TOKENS,
                    "messages": [{"role": "user", "content": row["prompt"]}],
                },
                headers={"x-tiergate-latency-class": "batch"},
                timeout=30,
            )
            assert resp.status_code == 200, resp.text
            live = resp.headers["x-tiergate-tiers-tried"].split(",")
            paths.append(live)
            # What the calibrated verifier says of the same answers and logprobs, from the live start.
            expected = [live[0]]
            rung = list(MODELS).index(live[0])
            while rung < len(MODELS) - 1:
                tier = list(MODELS)[rung]
                before = [row["responses"][t] for t in expected[:-1]]
                verdict = verifier.verify(
                    row["prompt"], row["responses"][tier], row["logprobs"][tier], rung=rung, previous_answers=before
                )
                if not verdict.escalate:
                    break
                rung += 1
                expected.append(list(MODELS)[rung])
            assert live == expected, row["id"]
    # Not a trivial agreement: answers were accepted below the top and others climbed to it.
    ends = [p[-1] for p in paths]
    assert ends.count("small") + ends.count("mid") >= 10 and sum(len(p) > 1 and p[-1] == "large" for p in paths) >= 5
