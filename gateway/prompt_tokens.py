"""Prompt tokens, counted with the tier's own tokenizer where the gateway has it.

Counting is not free. With the `tokenizers` library the stand-in model's tokenizer took 0.2-0.3 ms
for a 200-token prompt and 7-15 ms for an 8k-token one (in pieces; about 3x that in one piece) on a
shared 2-core machine, against about 1 us for the bytes/4 estimate (tests/bench/prompt_tokens.py
prints the numbers). So a prompt is counted exactly only when the answer depends on it: when a high
guess of its size, twice the estimate (UTF-8 bytes / 2), plus the answer tokens it asks for could
exceed the tier's context. Below that the prompt fits and max_tokens stands, and the estimate sizes
admission as before. English runs near bytes / 4.5 and code and most other scripts under bytes / 2;
a prompt denser than that (one token per byte is a byte-level tokenizer's worst case) that slips
under the rule reaches the engine, whose own 400 names the limit. A tier whose tokenizer the
gateway does not have always uses the estimate (`router.runtime.prompt_features.estimate_tokens`),
with the same fallback.

The chat template adds tokens the text does not show (role markers, a default system prompt, the
generation prompt). Rather than render each tier's template per request, a documented margin is
added to every count: TEMPLATE_TOKENS_FIXED per request plus TEMPLATE_TOKENS_PER_MESSAGE per
message. The stand-in model's template, rendered and counted, adds about 26 tokens fixed (its
default system prompt and the generation prompt) and 4 per message; tests/unit/test_prompt_tokens.py
checks the margin against it. A template with a longer built-in system prompt needs a larger margin.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from router.runtime.prompt_features import estimate_tokens

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger("tiergate.limits")

TEMPLATE_TOKENS_FIXED = 48
TEMPLATE_TOKENS_PER_MESSAGE = 8


def template_margin(messages: int) -> int:
    """Tokens the chat template may add around `messages` messages (the documented margin)."""
    return TEMPLATE_TOKENS_FIXED + TEMPLATE_TOKENS_PER_MESSAGE * messages


class TokenCounter:
    """Counts text with one tokenizer; `tokenizer` None means the bytes/4 estimate."""

    __slots__ = ("key", "tokenizer")

    def __init__(self, key: str, tokenizer: Tokenizer | None = None) -> None:
        self.key = key
        self.tokenizer = tokenizer

    @property
    def exact(self) -> bool:
        return self.tokenizer is not None

    def count(self, text: str) -> int:
        if self.tokenizer is None:
            return estimate_tokens(text)
        # In pieces cut before a single space between two words, where a byte-level pre-tokenizer
        # cuts anyway (so the count is the same), without offsets: 3x faster than one encode of an
        # 8k-token prompt here.
        encoded = self.tokenizer.encode_batch_fast(_pieces(text), add_special_tokens=False)
        return sum(len(e.ids) for e in encoded)


_PIECE_CHARS = 2_000
_CUT = re.compile(r"(?<=\S) (?=\S)")


def _pieces(text: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    while start < len(text):
        cut = _CUT.search(text, start + _PIECE_CHARS)
        end = len(text) if cut is None else cut.start()
        pieces.append(text[start:end])
        start = end
    return pieces or [""]


ESTIMATE = TokenCounter("estimate")


def load_counter(path: Path) -> TokenCounter:
    """A counter over the tokenizer.json at `path` (imported here: the CLI never pays for it)."""
    from tokenizers import Tokenizer

    return TokenCounter(str(path), Tokenizer.from_file(str(path)))


class PromptSize:
    """One request's prompt, counted per tokenizer on demand and remembered for the request."""

    __slots__ = ("_counted", "estimate", "high", "margin", "text")

    def __init__(self, text: str, messages: int) -> None:
        self.text = text
        self.margin = template_margin(messages)
        guess = estimate_tokens(text)
        self.estimate = guess + self.margin
        # The high guess that decides when to count exactly (see the module docstring).
        self.high = 2 * guess + self.margin
        self._counted: dict[str, int] = {}

    def counted(self, counter: TokenCounter) -> bool:
        """Whether this prompt was already counted with `counter`."""
        return counter.key in self._counted

    def tokens(self, counter: TokenCounter, *, exact: bool) -> int:
        """The prompt's tokens for `counter`'s tier: counted when `exact` and the tier has a tokenizer,
        else the estimate (both with the template margin)."""
        if not exact or not counter.exact:
            return self.estimate
        got = self._counted.get(counter.key)
        if got is None:
            got = self._counted[counter.key] = counter.count(self.text) + self.margin
        return got
