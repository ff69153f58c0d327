"""Prompt features for the learned scorer: task type, answer format and the shape of the question.

What predicts that a small model fails is mostly *what kind of task* it is (pick a letter among
two or four, write code, solve arithmetic, write open-ended prose) and how the question itself is
built, not the words of a long few-shot prefix. So the scorer reads the last block of the prompt
(the question after the solved examples) for format cues and sizes, and the whole prompt only for
length and the number of examples. Every feature is a cheap regex or count over bounded text, so
scoring an 8k-token prompt stays in the millisecond range.

Two readers share this module, one per scorer: `prompt_features` (the learned scorer's vector) and
`extract` / `heuristic_complexity` (the rule scorer's documented heuristic, kept as the fallback
when no artifact is configured). Answer-side features live in `answer_features`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# Huge prompts: the head and tail carry the signal; bound the regex work to this many characters.
_SAMPLE_CHARS = 12_000
# The question block is short; past this it is a document, not a question.
_BLOCK_CHARS = 4_000

_BLOCK_SPLIT = re.compile(r"\n\s*\n")
_OPTION = re.compile(r"^\s*\(?([A-J])[\).:]\s+\S", re.MULTILINE)
_LETTER_ONLY = re.compile(r"single choice|letter of the correct|answer with the letter|^answer:\s*$", re.I | re.M)
_CODE_ASK = re.compile(
    r"\b(write a (python )?(function|program|script|class)|implement|python|javascript|sql|regex|"
    r"function to|code)\b",
    re.I,
)
_CODE_BODY = re.compile(r"```|\bdef |\bclass |\breturn\b|#include|=>|;\s*$", re.M)
_DIGIT = re.compile(r"\d")
_ARITH = re.compile(r"\d\s*[-+*/x×^=%]\s*\d|\$\s?\d|\d+\s*(percent|%)", re.I)
_NEGATION = re.compile(r"\b(not|except|least|never|false|incorrect)\b", re.I)
_BLANK = re.compile(r"(?<![A-Za-z0-9])_(?![A-Za-z0-9])")
_REASONING = re.compile(r"\b(why|explain|analy[sz]e|compare|prove|derive|design|evaluate|step[- ]by[- ]step)\b", re.I)
_CONSTRAINT = re.compile(r"\b(must|exactly|at least|at most|without|only|format|json|words?)\b", re.I)
_WORD = re.compile(r"\w+")

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_block_chars",
    "log_block_words",
    "examples",
    "options",
    "two_options",
    "four_plus_options",
    "letter_only",
    "mc",
    "code_ask",
    "code_body",
    "blank",
    "digits_share",
    "arith",
    "negation",
    "reasoning",
    "constraints",
    "questions",
    "log_option_chars",
    "option_spread",
    "open_ended",
    "non_ascii_share",
    "block_lines",
)


def last_block(text: str) -> str:
    """The question after any few-shot examples: the last paragraph with some substance."""
    tail = text[-_BLOCK_CHARS * 2 :]
    blocks = [b for b in _BLOCK_SPLIT.split(tail) if b.strip()]
    if not blocks:
        return tail[-_BLOCK_CHARS:]
    # A trailing instruction line ("Answer:") alone is no question; take it with its predecessor.
    block = blocks[-1]
    if len(block.strip()) < 40 and len(blocks) > 1:
        block = blocks[-2] + "\n" + block
    return block[-_BLOCK_CHARS:]


def bounded_prompt(text: str) -> str:
    """The prompt, or its head and tail when it is huge (bounds the regex and hashing work)."""
    if len(text) <= _SAMPLE_CHARS:
        return text
    half = _SAMPLE_CHARS // 2
    return text[:half] + "\n\n" + text[-half:]


def prompt_features(text: str) -> list[float]:
    """Fixed-length feature vector (order: FEATURE_NAMES) for one prompt; never raises on str input."""
    sample = bounded_prompt(text)
    block = last_block(sample)
    options = _OPTION.findall(block)
    n_options = len(set(options))
    option_lines = [m.group(0) for m in re.finditer(r"^\s*\(?[A-J][\).:]\s+.*$", block, re.M)]
    option_lens = [len(line) for line in option_lines] or [0]
    mean_option = sum(option_lens) / len(option_lens)
    spread = (max(option_lens) - min(option_lens)) / (mean_option + 1.0)
    letter_only = bool(_LETTER_ONLY.search(block))
    mc = n_options >= 2
    code_ask = bool(_CODE_ASK.search(block))
    words = len(_WORD.findall(block))
    non_ascii = sum(1 for ch in block if ord(ch) > 127)
    examples = max(len(_BLOCK_SPLIT.split(sample)) - 1, 0)
    return [
        math.log1p(len(text)),
        math.log1p(len(block)),
        math.log1p(words),
        float(min(examples, 20)),
        float(min(n_options, 10)),
        float(n_options == 2),
        float(n_options >= 4),
        float(letter_only),
        float(mc),
        float(code_ask and not mc),
        float(bool(_CODE_BODY.search(block))),
        float(bool(_BLANK.search(block))),
        len(_DIGIT.findall(block)) / (len(block) + 1.0),
        float(bool(_ARITH.search(block))),
        float(min(len(_NEGATION.findall(block)), 3)),
        float(min(len(_REASONING.findall(block)), 3)),
        float(min(len(_CONSTRAINT.findall(block)), 5)),
        float(min(block.count("?"), 5)),
        math.log1p(mean_option),
        min(spread, 5.0),
        float(not mc and not code_ask),
        non_ascii / (len(block) + 1.0),
        float(min(block.count("\n") + 1, 50)),
    ]


def estimate_tokens(text: str) -> int:
    """Tokens `text` takes, for sizing (KV admission, usage of fakes, the heuristic's length signal).

    UTF-8 bytes over CHARS_PER_TOKEN, rounded up, plus one: for English the same as characters / 4,
    and higher for scripts that BPE vocabularies split finely (a CJK character is three bytes and
    often one token or more), which is the safe direction for admission.
    """
    return math.ceil(len(text.encode("utf-8", "replace")) / CHARS_PER_TOKEN) + 1


# --- The rule scorer's heuristic (no training; a length and cue count) ---

# About 4 characters per token for English BPE vocabularies; good enough for a length signal.
CHARS_PER_TOKEN = 4.0

# Word sets, not one big alternation regex: a regex of many alternatives is tried at every position
# of the text, which cost ~30 us on a one-line prompt; a word split and set lookups cost ~3 us.
_HEURISTIC_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
_REASONING_HEURISTIC_WORDS = frozenset(
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
_CONSTRAINT_HEURISTIC_WORDS = frozenset(["must", "should", "exactly", "without", "only", "format", "json"])
_MATH_HEURISTIC_WORDS = frozenset(
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
    words = _HEURISTIC_WORD.findall(lower)
    reasoning = sum(1 for w in words if w in _REASONING_HEURISTIC_WORDS) + lower.count("step by step")
    constraints = sum(1 for w in words if w in _CONSTRAINT_HEURISTIC_WORDS)
    constraints += lower.count("at least") + lower.count("at most")
    code = any(m in sample for m in _CODE_MARKERS) or (
        any(c in sample for c in "{};") and _LINE_END_PUNCT.search(sample) is not None
    )
    math = any(w in _MATH_HEURISTIC_WORDS for w in words) or _MATH_EXPR.search(sample) is not None
    return PromptFeatures(
        chars=len(text),
        est_tokens=estimate_tokens(text),
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
