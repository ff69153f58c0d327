"""Context arithmetic: does a prompt fit a tier, and how many answer tokens does that leave.

A tier's engine holds at most `context_tokens` tokens of prompt plus answer per sequence (vLLM's
max_model_len) and refuses a request whose prompt plus max_tokens exceed it. The gateway instead
caps max_tokens to what the context leaves, and sends a prompt that leaves no room at all to a tier
whose context is larger (or refuses it, when none is). Pure functions: the gateway counts the
tokens (gateway/limits.py) and acts on the answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

# An answer of zero tokens is no answer: a prompt fits when it leaves room for at least this many.
MIN_ANSWER_TOKENS = 1


@dataclass(frozen=True, slots=True)
class OutputPlan:
    """What one tier will be asked for: the prompt's tokens and the answer tokens it may produce."""

    prompt_tokens: int
    context_tokens: int
    # The max_tokens sent to the tier (0 when the prompt does not fit).
    max_tokens: int
    # True when the caller asked for more answer tokens than the context leaves.
    capped: bool

    @property
    def fits(self) -> bool:
        return self.max_tokens >= MIN_ANSWER_TOKENS

    @property
    def kv_tokens(self) -> int:
        """Tokens the sequence may hold in the tier's KV cache: what admission reserves."""
        return self.prompt_tokens + self.max_tokens


def plan_output(prompt_tokens: int, context_tokens: int, requested: int | None, default: int) -> OutputPlan:
    """The answer budget for a prompt of `prompt_tokens` on a tier of `context_tokens`.

    `requested` is the caller's max_tokens (None: the tier's `default`). Either is lowered to the
    room the context leaves; only a caller's own value counts as capped.
    """
    room = context_tokens - prompt_tokens
    if room < MIN_ANSWER_TOKENS:
        return OutputPlan(prompt_tokens, context_tokens, 0, requested is not None)
    wanted = default if requested is None else requested
    return OutputPlan(prompt_tokens, context_tokens, min(wanted, room), requested is not None and requested > room)


def fitting(ladder: Iterable[str], plan: Callable[[str], OutputPlan]) -> tuple[str, ...]:
    """The tiers of `ladder` (in order) whose context holds the prompt."""
    return tuple(name for name in ladder if plan(name).fits)
