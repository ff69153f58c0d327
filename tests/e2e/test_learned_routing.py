"""The gateway routes model=auto with the committed learned scorer and says which version it runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from router.runtime.artifact import DEFAULT_ARTIFACT, metadata_path
from tests.procs import fake_upstream, gateway, write_profile


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fake_upstream() as url:
        path = Path(tmp_path_factory.mktemp("learned")) / "profile.yaml"
        write_profile(
            path,
            "test-fake",
            endpoints={"small": url, "medium": url, "large": url},
            routing={"policy": "learned", "thresholds": [0.159, 0.159], "scorer_artifact": "default"},
        )
        with gateway(path) as base:
            yield base


def test_models_and_metrics_name_the_artifact_version(learned: str) -> None:
    version = json.loads(metadata_path(DEFAULT_ARTIFACT).read_text())["version"]
    models = httpx.get(learned + "/models").json()["data"]
    assert models[0]["id"] == "auto"
    assert models[0]["tiergate"] == {"policy": "learned", "scorer_version": version}
    metrics = httpx.get(learned.removesuffix("/v1") + "/metrics").text
    assert f'tiergate_router_info{{policy="learned",version="{version}"}} 1.0' in metrics


def test_auto_requests_are_routed_by_the_learned_scorer(learned: str) -> None:
    prompts = [
        "Hi!",
        "Write a Python function that returns the n-th prime number, with tests.",
        "Question: Which gas do plants absorb? Options: A) oxygen B) carbon dioxide C) helium D) neon. Answer:",
    ]
    tiers = set()
    with openai.OpenAI(base_url=learned, api_key="unused", max_retries=0) as client:
        for prompt in prompts:
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": prompt}]
            )
            tiers.add(raw.headers["x-tiergate-tier"])
            assert raw.parse().choices[0].message.content
    assert tiers <= {"small", "medium", "large"}
    metrics = httpx.get(learned.removesuffix("/v1") + "/metrics").text
    assert "tiergate_routing_decisions_total" in metrics
