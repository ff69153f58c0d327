"""Prompt tokens, counted with the tier's own tokenizer where the gateway has it.

Counting is not free: with the `tokenizers` library the stand-in model's tokenizer took about 0.3 ms
for a 200-token prompt and tens of ms for an 8k-token one on a loaded 2-core machine
(tests/bench/prompt_tokens.py measures it), against about 1 us for the bytes/4 estimate. So a prompt
is counted exactly only when the answer depends on it: when its upper bound (UTF-8 bytes: a
byte-level BPE tokenizer never makes more tokens than bytes) plus the answer tokens it asks for
could exceed the tier's context. Below that the prompt fits and max_tokens stands whatever the
exact count, and the estimate sizes admission as before. A tier whose tokenizer the gateway does
not have always uses the estimate (`router.runtime.prompt_features.estimate_tokens`): a prompt it
lets through that the engine finds too long comes back as the engine's own 400.

The chat template adds tokens the text does not show (role markers, a default system prompt, the
generation prompt). Rather than render each tier's template per request, a documented margin is
added to every count: TEMPLATE_TOKENS_FIXED per request plus TEMPLATE_TOKENS_PER_MESSAGE per
message. The stand-in model's template, rendered and counted, adds about 26 tokens fixed (its
default system prompt and the generation prompt) and 4 per message; tests/unit/test_prompt_tokens.py
checks the margin against it. A template with a longer built-in system prompt needs a larger margin.
"""

from __future__ import annotations

import logging
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
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


ESTIMATE = TokenCounter("estimate")


def load_counter(path: Path) -> TokenCounter:
    """A counter over the tokenizer.json at `path` (imported here: the CLI never pays for it)."""
    from tokenizers import Tokenizer

    return TokenCounter(str(path), Tokenizer.from_file(str(path)))


class PromptSize:
    """One request's prompt, counted per tokenizer on demand and remembered for the request."""

    __slots__ = ("_counted", "bound", "estimate", "margin", "text")

    def __init__(self, text: str, messages: int) -> None:
        self.text = text
        self.margin = template_margin(messages)
        n_bytes = len(text.encode("utf-8", "replace"))
        self.bound = n_bytes + self.margin
        self.estimate = estimate_tokens(text) + self.margin
        self._counted: dict[str, int] = {}

    def tokens(self, counter: TokenCounter, *, exact: bool) -> int:
        """The prompt's tokens for `counter`'s tier: counted when `exact` and the tier has a tokenizer,
        else the estimate (both with the template margin)."""
        if not exact or not counter.exact:
            return self.estimate
        got = self._counted.get(counter.key)
        if got is None:
            got = self._counted[counter.key] = counter.count(self.text) + self.margin
        return got
