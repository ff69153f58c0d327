"""Features of a tier's answer for the cascade verifier: format, hedging, agreement, logprobs.

A small model's own answer says more about whether it failed than the prompt does: whether it
picked a valid option at all, whether it hedged, how long it rambled, and above all whether a
second, independent model reached the same final answer. Answers are reduced to a comparable
"final answer" (an option letter, the last number, or the code's normalised tokens) so
agreement can be measured across tiers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from router.runtime.prompt_features import FEATURE_NAMES, prompt_features

_ANSWER_CHARS = 8_000
# A bare option letter: "C", "C)", "(C)", "C. text", "C: text"; not "I think" or "A dog".
_LETTER_AT_START = re.compile(r"^\W*\(?([A-J])(?:[\).:,]|\s*$|\s*\n)")
_LETTER_STATED = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-J])\b", re.I)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_FINAL_MARK = re.compile(r"####\s*(-?[\d,]+(?:\.\d+)?)")
_CODE_FENCE = re.compile(r"```(?:[a-zA-Z0-9_+-]*)\n(.*?)(?:```|$)", re.S)
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|[^\sA-Za-z0-9_]")
_HEDGE = re.compile(
    r"\b(not sure|unsure|i think|might|may be|maybe|possibly|perhaps|unclear|cannot determine|"
    r"can't determine|it depends|both|neither|however|sorry|i apologi[sz]e|as an ai)\b",
    re.I,
)
_REFUSAL = re.compile(r"\b(i cannot|i can't|i am unable|i'm unable|not able to)\b", re.I)

ANSWER_FEATURE_NAMES: tuple[str, ...] = (
    "ans_log_chars",
    "ans_lines",
    "ans_has_letter",
    "ans_letter_only",
    "ans_letter_index",
    "ans_has_number",
    "ans_has_final_mark",
    "ans_has_code",
    "ans_code_lines",
    "ans_hedges",
    "ans_refusal",
    "ans_empty",
    "prev_count",
    "agree_prev",
    "disagree_prev",
    "prev_similarity",
    "has_logprobs",
    "lp_mean",
    "lp_min",
    "lp_first",
)
VERIFIER_FEATURE_NAMES: tuple[str, ...] = ("rung", *ANSWER_FEATURE_NAMES, *FEATURE_NAMES)


def extract_letter(answer: str) -> str | None:
    """The option letter an answer picks, if it picks one (first letter at the start, or stated)."""
    head = answer.strip()[:300]
    match = _LETTER_AT_START.match(head) or _LETTER_STATED.search(head)
    return str(match.group(1)).upper() if match else None


def _code(answer: str) -> str:
    blocks = _CODE_FENCE.findall(answer)
    return "\n".join(blocks)


def final_answer(answer: str) -> str:
    """A comparable normal form: option letter, else marked/last number, else code tokens, else text."""
    text = answer[:_ANSWER_CHARS]
    letter = extract_letter(text)
    if letter is not None:
        return f"letter:{letter}"
    marked = _FINAL_MARK.search(text)
    if marked:
        return "number:" + marked.group(1).replace(",", "")
    code = _code(text)
    if code:
        return "code:" + " ".join(_TOKEN.findall(code))
    numbers = _NUMBER.findall(text)
    if numbers:
        return "number:" + str(numbers[-1]).replace(",", "")
    return "text:" + " ".join(text.lower().split())[:500]


def _similarity(a: str, b: str) -> float:
    """Jaccard overlap of the two final answers' token sets (1.0 for identical answers)."""
    if a == b:
        return 1.0
    ta, tb = set(_TOKEN.findall(a)), set(_TOKEN.findall(b))
    if not ta or not tb:
        return 0.0
    return len(ta & tb) / len(ta | tb)


def answer_features(
    answer: str, previous_answers: Sequence[str] = (), logprobs: Sequence[float] | None = None
) -> list[float]:
    """Feature vector (order: ANSWER_FEATURE_NAMES) of one answer; never raises on str input."""
    text = answer[:_ANSWER_CHARS]
    letter = extract_letter(text)
    stripped = text.strip()
    code = _code(text)
    mine = final_answer(text)
    finals = [final_answer(p) for p in previous_answers]
    agree = sum(1 for f in finals if f == mine)
    similarity = max((_similarity(mine, f) for f in finals), default=0.0)
    # Logprobs are <= 0; clip so a malformed value cannot overflow the mean.
    lps = [min(max(float(x), -100.0), 0.0) for x in (logprobs or []) if math.isfinite(x)]
    has_lp = bool(lps)
    return [
        math.log1p(len(answer)),
        float(min(stripped.count("\n") + 1 if stripped else 0, 200)),
        float(letter is not None),
        float(letter is not None and len(stripped) <= 3),
        float(ord(letter) - ord("A")) if letter is not None else -1.0,
        float(bool(_NUMBER.search(text))),
        float(bool(_FINAL_MARK.search(text))),
        float(bool(code)),
        float(min(code.count("\n") + 1 if code else 0, 200)),
        float(min(len(_HEDGE.findall(text)), 5)),
        float(bool(_REFUSAL.search(text))),
        float(not stripped),
        float(min(len(finals), 5)),
        float(agree > 0),
        float(bool(finals) and agree == 0),
        similarity,
        float(has_lp),
        sum(lps) / len(lps) if has_lp else 0.0,
        min(lps) if has_lp else 0.0,
        lps[0] if has_lp else 0.0,
    ]


def verifier_features(
    prompt: str,
    answer: str,
    rung: int,
    previous_answers: Sequence[str] = (),
    logprobs: Sequence[float] | None = None,
    prompt_row: Sequence[float] | None = None,
) -> list[float]:
    """Rung, the answer's features and the prompt's features (`prompt_row` if already computed)."""
    prompt_part = prompt_features(prompt) if prompt_row is None else prompt_row
    return [float(rung), *answer_features(answer, previous_answers, logprobs), *prompt_part]
