"""Cheap, deterministic request features for the rule policy's complexity estimate.

The estimate is a documented heuristic, not a trained model: it exists so the strategy note's rule
has an input. The learned scorer (router/scoring) replaces it when a profile asks for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# About 4 characters per token for English BPE vocabularies; good enough for a length signal.
CHARS_PER_TOKEN = 4.0

# Word sets, not one big alternation regex: a regex of many alternatives is tried at every position
# of the text, which cost ~30 us on a one-line prompt; a word split and set lookups cost ~3 us.
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
_REASONING_WORDS = frozenset(
    [
        "why",
        "explain",
        "analyze",
        "analyse",
        "analysis",
        "compare",
        "contrast",
        "derive",
        "design",
        "evaluate",
        "justify",
        "plan",
        "step-by-step",
        "trade-off",
        "trade-offs",
        "tradeoff",
        "tradeoffs",
        "reason",
        "prove",
    ]
)
_CONSTRAINT_WORDS = frozenset(["must", "should", "exactly", "without", "only", "format", "json"])
_MATH_WORDS = frozenset(
    ["frac", "sum", "integral", "equation", "prove", "theorem", "lemma", "derivative", "probability"]
)
_CODE_MARKERS = ("```", "def ", "class ", "return ", "#include", "function ", "=>", "import ")
_MATH_EXPR = re.compile(r"\d\s*[-+*/^=]\s*\d")
_LINE_END_PUNCT = re.compile(r"[{};][ \t]*$", re.MULTILINE)


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
    lower = sample.lower()
    words = _WORD.findall(lower)
    reasoning = sum(1 for w in words if w in _REASONING_WORDS) + lower.count("step by step")
    constraints = sum(1 for w in words if w in _CONSTRAINT_WORDS)
    constraints += lower.count("at least") + lower.count("at most")
    code = any(m in sample for m in _CODE_MARKERS) or (
        any(c in sample for c in "{};") and _LINE_END_PUNCT.search(sample) is not None
    )
    math = any(w in _MATH_WORDS for w in words) or _MATH_EXPR.search(sample) is not None
    return PromptFeatures(
        chars=len(text),
        est_tokens=int(len(text) / CHARS_PER_TOKEN) + 1,
        code=code,
        math=math,
        reasoning_cues=reasoning,
        constraint_cues=constraints,
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
