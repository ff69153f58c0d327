"""Cheap, deterministic request features for the rule policy's complexity estimate.

The estimate is a documented heuristic, not a trained model: it exists so the strategy note's rule
has an input. The learned scorer (router/scoring) replaces it when a profile asks for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# About 4 characters per token for English BPE vocabularies; good enough for a length signal.
CHARS_PER_TOKEN = 4.0

_CODE = re.compile(r"```|\bdef |\bclass |\breturn\b|[{};]\s*$|#include|\bfunction\b|=>", re.MULTILINE)
_MATH = re.compile(
    r"\d+\s*[-+*/^=]\s*\d+|\\frac|\\sum|\bintegral\b|\bequation\b|\bprove\b|\btheorem\b",
    re.I,
)
_REASONING = re.compile(
    r"\b(why|explain|analy[sz]e|compare|step[- ]by[- ]step|derive|design|evaluate"
    r"|trade-?offs?|justify|plan)\b",
    re.I,
)
_CONSTRAINTS = re.compile(r"\b(must|should|exactly|at least|at most|without|only|format|json)\b", re.I)


@dataclass(frozen=True, slots=True)
class PromptFeatures:
    chars: int
    est_tokens: int
    code: bool
    math: bool
    reasoning_cues: int
    constraint_cues: int
    questions: int
    turns: int


def extract(text: str, turns: int = 1) -> PromptFeatures:
    """Features of the user-visible text of a request (all messages joined)."""
    # Bound the regex work on huge prompts: the head and tail carry the signal.
    sample = text if len(text) <= 20_000 else text[:10_000] + text[-10_000:]
    return PromptFeatures(
        chars=len(text),
        est_tokens=int(len(text) / CHARS_PER_TOKEN) + 1,
        code=bool(_CODE.search(sample)),
        math=bool(_MATH.search(sample)),
        reasoning_cues=len(_REASONING.findall(sample)),
        constraint_cues=len(_CONSTRAINTS.findall(sample)),
        questions=sample.count("?"),
        turns=max(turns, 1),
    )


def heuristic_complexity(f: PromptFeatures) -> float:
    """Map features to [0, 1]; higher means a small model is less likely to do well."""
    score = 0.0
    # Length saturates: past ~1k tokens more text says little more about difficulty.
    score += 0.25 * min(f.est_tokens / 1000.0, 1.0)
    score += 0.2 if f.code else 0.0
    score += 0.2 if f.math else 0.0
    score += 0.1 * min(f.reasoning_cues, 3)
    score += 0.03 * min(f.constraint_cues, 3)
    score += 0.02 * min(max(f.questions - 1, 0), 3)
    score += 0.02 * min(f.turns - 1, 5)
    return min(max(score, 0.0), 1.0)
