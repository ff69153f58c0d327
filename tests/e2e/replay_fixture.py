"""The fixture outcome table that replay tiers answer from, and the ladder the e2e tests put on it."""

from __future__ import annotations

import json

from tests.procs import REPO

FIXTURE = REPO / "tests" / "fixtures" / "outcomes-small.jsonl"
ROWS = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
MODELS = {"small": "mistralai/mistral-7b-chat", "mid": "mistralai/mixtral-8x7b-chat", "large": "gpt-4-1106-preview"}
PRICE = {"small": 1.0, "mid": 10.0, "large": 100.0}  # USD per million tokens, prompt and output alike
