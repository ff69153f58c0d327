"""Outcome rows: one prompt with each model's score, cost and answer, as plain typed data.

The outcome tables spell some models differently (RouteLLM and arena files name Mixtral
`mistralai/Mixtral-8x7B-Instruct-v0.1`); `MODEL_ALIASES` folds those onto the ladder's keys so
every consumer sees one spelling. Parsing is pure: reading files lives in `router/data.py`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The default ladder, cheapest first: stand-ins for 7B -> 70B-class -> frontier.
DEFAULT_LADDER: tuple[str, ...] = (
    "mistralai/mistral-7b-chat",
    "mistralai/mixtral-8x7b-chat",
    "gpt-4-1106-preview",
)

MODEL_ALIASES: dict[str, str] = {
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "mistralai/mixtral-8x7b-chat",
    "mistralai/Mistral-7B-Instruct-v0.1": "mistralai/mistral-7b-chat",
}


def canonical_model(name: str, aliases: Mapping[str, str] = MODEL_ALIASES) -> str:
    """The ladder's spelling of a model key (unknown names pass through unchanged)."""
    return aliases.get(name, name)


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """One prompt and what each model did with it (scores in [0, 1], costs in USD)."""

    id: str
    benchmark: str
    prompt: str
    scores: dict[str, float]
    cost_usd: dict[str, float] = field(default_factory=dict)
    responses: dict[str, str] = field(default_factory=dict)
    # The answer's token logprobs, where the sample recorded them (tiers return them live); the
    # verifier reads them as features, so a head re-fitted on such a sample learns their weight.
    logprobs: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def has(self, models: Iterable[str]) -> bool:
        return all(m in self.scores for m in models)


def finite_number(value: Any) -> bool:
    """A JSON number that can enter a mean: not a bool, not NaN or an infinity."""
    # NaN and infinities (JSON readers accept `NaN`) would poison every mean they enter.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _float_map(raw: Any, aliases: Mapping[str, str]) -> dict[str, float]:
    if not isinstance(raw, dict):
        return {}
    return {canonical_model(str(key), aliases): float(value) for key, value in raw.items() if finite_number(value)}


def _logprob_map(raw: Any, aliases: Mapping[str, str]) -> dict[str, tuple[float, ...]]:
    """`{model: [token logprob, ...]}`; non-numbers and non-finite values are left out."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, tuple[float, ...]] = {}
    for key, values in raw.items():
        if isinstance(values, list):
            kept = tuple(float(v) for v in values if finite_number(v))
            if kept:
                out[canonical_model(str(key), aliases)] = kept
    return out


def parse_row(data: Mapping[str, Any], aliases: Mapping[str, str] = MODEL_ALIASES) -> OutcomeRow:
    """Build a row from one decoded JSON object; raises ValueError on a row without scores."""
    scores = _float_map(data.get("scores"), aliases)
    if not scores:
        raise ValueError(f"row {data.get('id')!r} has no scores")
    raw_responses = data.get("responses")
    responses: dict[str, str] = {}
    if isinstance(raw_responses, dict):
        for key, value in raw_responses.items():
            if isinstance(value, str):
                responses[canonical_model(str(key), aliases)] = value
    return OutcomeRow(
        id=str(data.get("id", "")),
        benchmark=str(data.get("benchmark", "unknown")),
        prompt=str(data.get("prompt", "")),
        scores=scores,
        cost_usd=_float_map(data.get("cost_usd"), aliases),
        responses=responses,
        logprobs=_logprob_map(data.get("logprobs"), aliases),
    )


def rows_hash(rows: Sequence[OutcomeRow]) -> str:
    """A stable sha256 over ids, prompts and scores: names the data an artifact was trained on."""
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r.id):
        digest.update(row.id.encode())
        digest.update(b"\0")
        digest.update(row.prompt.encode())
        for model in sorted(row.scores):
            digest.update(f"\0{model}={row.scores[model]:.4f}".encode())
        digest.update(b"\n")
    return digest.hexdigest()


def to_rungs(rows: Sequence[OutcomeRow], models: Mapping[str, str]) -> list[OutcomeRow]:
    """Rows re-keyed from model keys to rung names (`models`: model key -> rung); other models dropped.

    Everything downstream (training, calibration, evaluation) sees rungs only, so an artifact never
    depends on which models stood on the ladder. Rows with no score for any given model are dropped.
    """
    keyed = {canonical_model(m): rung for m, rung in models.items()}
    out: list[OutcomeRow] = []
    for row in rows:
        scores = {keyed[m]: v for m, v in row.scores.items() if m in keyed}
        if not scores:
            continue
        out.append(
            OutcomeRow(
                id=row.id,
                benchmark=row.benchmark,
                prompt=row.prompt,
                scores=scores,
                cost_usd={keyed[m]: v for m, v in row.cost_usd.items() if m in keyed},
                responses={keyed[m]: v for m, v in row.responses.items() if m in keyed},
                logprobs={keyed[m]: v for m, v in row.logprobs.items() if m in keyed},
            )
        )
    return out


def models_present(rows: Sequence[OutcomeRow]) -> set[str]:
    """Every model key with a score in `rows` (in the table's canonical spelling)."""
    return {m for r in rows for m in r.scores}
