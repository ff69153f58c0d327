"""Features of a tier's answer for the cascade verifier: final answer, agreement, prose, logprobs.

A small model's own answer says more about whether it failed than the prompt does: whether it
reached a final answer at all, whether it hedged or refused, and above all whether a second,
independent model reached the same final answer. Answers are reduced to a comparable final answer
of one of four shapes, wherever in the answer it is stated: an option letter ("C", "answer is
(C)", "Answer: C" on the last line, \\boxed{C}), a number (#### 42, \\boxed{42}, "answer is 42",
else the last number), a code block, or the prose itself. Prose answers have no final answer to
agree on, so two tiers' prose is compared by a lexical similarity (cosine of word counts): an
embedding model would cost more than the verifier's whole 5 ms budget (docs/router.md).

Nothing here names a benchmark or a model: the features are the same for any traffic.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from router.runtime.prompt_features import FEATURE_NAMES, prompt_features

_ANSWER_CHARS = 8_000
# Where a short reasoning answer states its choice; the tail is read for "so the answer is ...".
_TAIL_CHARS = 600
# Markdown emphasis may wrap the letter ("**C**", "*(C)*"), as chat models often write it.
# The letter itself is matched case-sensitively: "the answer is a dog" states no option.
_LETTER = r"[*_]{0,2}\(?\[?((?-i:[A-J]))\]?\)?[*_]{0,2}"
# A bare option letter at the start: "C", "C)", "(C)", "C. text", "C: text"; not "I think" or "A dog".
_LETTER_AT_START = re.compile(r"^\W*\(?([A-J])(?:[\).:,]|\s*$|\s*\n)")
# "the answer is (C)", "Answer: C", "correct option is C", "choice: (B)"; the last such statement wins.
_LETTER_STATED = re.compile(
    r"\b(?:answer|option|choice)(?:\s+(?:is|would be|should be|must be))?\s*[:=]?[*_]{0,2}\s*(?:option\s+)?"
    + _LETTER
    + r"(?![A-Za-z0-9'])",
    re.I,
)
_BOXED = re.compile(r"\\boxed\{([^{}]{1,80})\}")
# A last line that is only a letter: "(C)", "C.", "**C**".
_LETTER_LINE = re.compile(r"^\W{0,4}([A-J])\W{0,4}$")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_FRACTION = re.compile(r"\\[dt]?frac\{(-?\d+(?:\.\d+)?)\}\{(\d+(?:\.\d+)?)\}|(?<![\d./])(-?\d+)\s*/\s*(\d+)(?![\d./])")
_FINAL_MARK = re.compile(r"####\s*\$?\s*(-?[\d,]+(?:\.\d+)?)")
_NUMBER_STATED = re.compile(r"\banswer(?:\s+is)?\s*[:=]?\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", re.I)
_CODE_FENCE = re.compile(r"```(?:[a-zA-Z0-9_+-]*)\n(.*?)(?:```|$)", re.S)
# Unfenced code: a definition and an indented body.
_CODE_UNFENCED = re.compile(r"^(?:def |class |function |public |#include|import )", re.M)
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|[^\sA-Za-z0-9_]")
_WORD = re.compile(r"[a-z0-9]+")
# Matched against the lower-cased answer: a case-insensitive alternation is four times slower.
_HEDGE = re.compile(
    r"\b(not sure|unsure|i think|might|may be|maybe|possibly|perhaps|unclear|cannot determine|"
    r"can't determine|it depends|both|neither|however|sorry|i apologi[sz]e|as an ai)\b"
)
_REFUSAL = re.compile(
    r"\b(i cannot|i can't|i can not|i am unable|i'm unable|not able to|i won't|i will not|"
    r"not appropriate|against my|cannot provide|can't provide|cannot help|can't help)\b"
)

# How an answer's final answer was found (ans_letter_where).
_WHERE_NONE, _WHERE_START, _WHERE_STATED, _WHERE_LAST = 0.0, 1.0, 2.0, 3.0

ANSWER_FEATURE_NAMES: tuple[str, ...] = (
    "ans_log_chars",
    "ans_lines",
    "ans_has_letter",
    "ans_letter_only",
    "ans_letter_where",
    "ans_has_number",
    "ans_has_final_mark",
    "ans_has_code",
    "ans_code_lines",
    "ans_is_prose",
    "ans_hedges",
    "ans_refusal",
    "ans_empty",
    "prev_count",
    "agree_prev",
    "agree_all",
    "disagree_prev",
    "prev_similarity",
    "prev_text_similarity",
    "prev_len_ratio",
    "has_logprobs",
    "lp_mean",
    "lp_min",
    "lp_first",
)
# The prompt features the verifier reads: none. With the task's shape in (options, code, open prose)
# the verifier learned which benchmark it was looking at, and on a benchmark it had not seen it
# ranked worse than agreement alone (leave-one-benchmark-out, docs/router.md).
VERIFIER_PROMPT_FEATURES: tuple[str, ...] = ()
_PROMPT_IDX = tuple(FEATURE_NAMES.index(name) for name in VERIFIER_PROMPT_FEATURES)
VERIFIER_FEATURE_NAMES: tuple[str, ...] = ("rungs_above", *ANSWER_FEATURE_NAMES, *VERIFIER_PROMPT_FEATURES)


def _letter_and_where(answer: str) -> tuple[str | None, float]:
    head = answer.strip()
    if not head:
        return None, _WHERE_NONE
    boxed = _BOXED.findall(answer)
    if boxed:
        inner = boxed[-1].strip().strip("()").strip()
        if len(inner) == 1 and "A" <= inner.upper() <= "J" and inner.isupper():
            return inner, _WHERE_LAST
    start = _LETTER_AT_START.match(head[:300])
    if start:
        return str(start.group(1)).upper(), _WHERE_START
    stated = _LETTER_STATED.findall(answer)
    if stated:
        return str(stated[-1]).upper(), _WHERE_STATED
    last = head.rsplit("\n", 1)[-1].strip()
    line = _LETTER_LINE.match(last)
    if line:
        return str(line.group(1)).upper(), _WHERE_LAST
    return None, _WHERE_NONE


def extract_letter(answer: str) -> str | None:
    """The option letter an answer picks, wherever it states it (None when it picks none)."""
    return _letter_and_where(answer[:_ANSWER_CHARS])[0]


def _code(answer: str) -> str:
    blocks = _CODE_FENCE.findall(answer)
    if blocks:
        return "\n".join(blocks)
    match = _CODE_UNFENCED.search(answer)
    return answer[match.start() :] if match else ""


def _fraction_value(match: re.Match[str]) -> str:
    num, den = (match.group(1), match.group(2)) if match.group(1) is not None else (match.group(3), match.group(4))
    return f"{float(num) / float(den):.6g}" if float(den) != 0 else match.group(0)


def _number(text: str) -> str | None:
    # A stated or boxed "3/4" or "\frac{3}{4}" is one number, 0.75, as a reference may write it; a
    # fraction in passing ("1/3 pound") is not the answer, so the last-number fallback reads the text.
    stated = _FRACTION.sub(_fraction_value, text) if "/" in text or "frac" in text else text
    for pattern in (_FINAL_MARK, _NUMBER_STATED):
        found = pattern.findall(stated)
        if found:
            return str(found[-1]).replace(",", "").rstrip(".")
    for boxed in reversed(_BOXED.findall(stated)):
        numbers = _NUMBER.findall(boxed)
        if numbers:
            return str(numbers[-1]).replace(",", "")
    numbers = _NUMBER.findall(text[-_TAIL_CHARS:])
    return str(numbers[-1]).replace(",", "") if numbers else None


def _canonical_number(raw: str) -> str:
    try:
        value = float(raw)
    except ValueError:
        return raw
    return f"{value:.6g}" if math.isfinite(value) else raw


def final_answer(answer: str) -> str:
    """A comparable normal form: option letter, else code tokens, else a final number, else prose."""
    text = answer[:_ANSWER_CHARS]
    return _final(text, _letter_and_where(text)[0], _code(text))


def _final(text: str, letter: str | None, code: str) -> str:
    if letter is not None:
        return f"letter:{letter}"
    if code:
        return "code:" + " ".join(_TOKEN.findall(code))
    number = _number(text)
    if number is not None:
        return "number:" + _canonical_number(number)
    return "text:" + " ".join(text.lower().split())[:500]


def _jaccard(a: str, b: str) -> float:
    """Overlap of the two final answers' token sets (1.0 for identical answers)."""
    if a == b:
        return 1.0
    ta, tb = set(_TOKEN.findall(a)), set(_TOKEN.findall(b))
    if not ta or not tb:
        return 0.0
    return len(ta & tb) / len(ta | tb)


def _bag(lower: str) -> Counter[str]:
    return Counter(_WORD.findall(lower))


def word_counts(answer: str) -> Counter[str]:
    """The word-count bag the verifier compares answers by (their first 8,000 characters, lower-cased)."""
    return _bag(answer[:_ANSWER_CHARS].lower())


def text_similarity(a: Counter[str], b: Counter[str]) -> float:
    """Cosine of two word-count bags, in [0, 1] (0.0 when either is empty)."""
    if not a or not b:
        return 0.0
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    dot = sum(count * large.get(word, 0) for word, count in small.items())
    norm = math.sqrt(sum(c * c for c in a.values())) * math.sqrt(sum(c * c for c in b.values()))
    return dot / norm if norm > 0 else 0.0


def answer_features(
    answer: str, previous_answers: Sequence[str] = (), logprobs: Sequence[float] | None = None
) -> list[float]:
    """Feature vector (order: ANSWER_FEATURE_NAMES) of one answer; never raises on str input."""
    text = answer[:_ANSWER_CHARS]
    lower = text.lower()
    letter, where = _letter_and_where(text)
    stripped = text.strip()
    code = _code(text)
    mine = _final(text, letter, code)
    finals = [final_answer(p) for p in previous_answers]
    agree = sum(1 for f in finals if f == mine)
    similarity = max((_jaccard(mine, f) for f in finals), default=0.0)
    bag = _bag(lower)  # the answer's text, already cut and lower-cased above
    text_sim = max((text_similarity(bag, word_counts(p)) for p in previous_answers), default=0.0)
    len_ratio = math.log1p(len(answer)) - math.log1p(len(previous_answers[-1])) if previous_answers else 0.0
    # Logprobs are <= 0; clip so a malformed value cannot overflow the mean.
    lps = [min(max(float(x), -100.0), 0.0) for x in (logprobs or []) if math.isfinite(x)]
    has_lp = bool(lps)
    return [
        math.log1p(len(answer)),
        float(min(stripped.count("\n") + 1 if stripped else 0, 200)),
        float(letter is not None),
        float(letter is not None and len(stripped) <= 3),
        where,
        float(bool(_NUMBER.search(text))),
        float(bool(_FINAL_MARK.search(text) or _BOXED.search(text))),
        float(bool(code)),
        float(min(code.count("\n") + 1 if code else 0, 200)),
        float(mine.startswith("text:")),
        float(min(len(_HEDGE.findall(lower)), 5)),
        float(bool(_REFUSAL.search(lower))),
        float(not stripped),
        float(min(len(finals), 5)),
        float(agree > 0),
        float(bool(finals) and agree == len(finals)),
        float(bool(finals) and agree == 0),
        similarity,
        text_sim,
        max(min(len_ratio, 5.0), -5.0),
        float(has_lp),
        sum(lps) / len(lps) if has_lp else 0.0,
        min(lps) if has_lp else 0.0,
        lps[0] if has_lp else 0.0,
    ]


def verifier_features(
    prompt: str,
    answer: str,
    rungs_above: int,
    previous_answers: Sequence[str] = (),
    logprobs: Sequence[float] | None = None,
    prompt_row: Sequence[float] | None = None,
) -> list[float]:
    """Rungs left above this one, the answer's features, the task's shape (`prompt_row` if computed)."""
    prompt_part = prompt_features(prompt) if prompt_row is None else prompt_row
    shape = [float(prompt_part[i]) for i in _PROMPT_IDX]
    return [float(rungs_above), *answer_features(answer, previous_answers, logprobs), *shape]
