"""Limits that follow the tier: the prompt must fit the tier's context, max_tokens is capped to what is left.

Per tier the gateway knows the context its engine accepts and, where it has the files, the tokenizer
that counts for it (deployments/limits.py reads both from the profile). For each request and tier:

- the prompt is sized (gateway/prompt_tokens.py: exact near the limit, the estimate elsewhere);
- `router.runtime.context_fit.plan_output` gives the answer tokens the context leaves;
- a prompt that leaves none moves routing to a larger tier of the request's ladder (route reason
  `context-fit`), or is refused with a 400 naming the limit (param `messages`, code
  `context_length_exceeded`) when no tier it may use fits;
- max_tokens (or max_completion_tokens, whichever the caller sent) is lowered to what the context
  leaves before the body goes to the tier; the response says so in `x-tiergate-max-tokens-capped`
  (the value sent); admission reserves the prompt plus that capped value, never a caller's 1e9.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deployments.limits import context_tokens, tokenizer_file
from deployments.profile import ProfileError, TierSpec
from gateway.errors import InvalidRequest
from gateway.prompt_tokens import ESTIMATE, PromptSize, TokenCounter, load_counter, log
from gateway.protocol import ParsedRequest
from router.runtime.context_fit import OutputPlan, plan_output

CAPPED_HEADER = b"x-tiergate-max-tokens-capped"
# A prompt estimated this long is counted in a worker thread, not on the event loop: its count takes
# milliseconds (gateway/prompt_tokens.py), a thread hop about 0.1 ms.
OFF_LOOP_TOKENS = 4_096
CONTEXT_CODE = "context_length_exceeded"


@dataclass(frozen=True, slots=True)
class TierLimit:
    context_tokens: int
    default_max_tokens: int
    counter: TokenCounter


class TierLimits:
    """Every tier's context and token counter; plans one request's answer budget on each."""

    def __init__(self, limits: dict[str, TierLimit]) -> None:
        self.by_tier = limits

    @classmethod
    def from_specs(cls, specs: Sequence[TierSpec], cache_root: Path | None = None) -> TierLimits:
        """Load each distinct tokenizer once (tiers sharing one share its counter)."""
        counters: dict[Path, TokenCounter] = {}
        limits: dict[str, TierLimit] = {}
        for spec in specs:
            path = tokenizer_file(spec, specs, cache_root)
            counter = ESTIMATE
            if path is not None:
                counter = counters.get(path) or counters.setdefault(path, _load(spec.name, path))
            limits[spec.name] = TierLimit(context_tokens(spec, specs), spec.default_max_tokens, counter)
        estimated = [name for name, lim in limits.items() if not lim.counter.exact]
        if estimated:
            log.info("prompt tokens of tiers %s are estimated (bytes/4): no tokenizer file", ", ".join(estimated))
        return cls(limits)

    def plan(self, tier: str, parsed: ParsedRequest) -> OutputPlan:
        """The prompt's tokens and the max_tokens `tier` can be asked for."""
        limit = self.by_tier[tier]
        size = prompt_size(parsed)
        prompt = size.tokens(limit.counter, exact=self._near(limit, size, parsed))
        return plan_output(prompt, limit.context_tokens, parsed.max_tokens, limit.default_max_tokens)

    @staticmethod
    def _near(limit: TierLimit, size: PromptSize, parsed: ParsedRequest) -> bool:
        # Counted exactly only where the count can change the answer (see gateway/prompt_tokens.py).
        requested = parsed.max_tokens
        wanted = limit.default_max_tokens if requested is None else requested
        return size.high + wanted > limit.context_tokens

    async def count_long_prompt(self, parsed: ParsedRequest) -> None:
        """Count a long prompt that some tier needs counted in a worker thread, before routing asks:
        the plans made afterwards find the count made (tokenizers releases the GIL while encoding)."""
        size = prompt_size(parsed)
        if size.estimate - size.margin < OFF_LOOP_TOKENS:
            return
        counters = {lim.counter.key: lim.counter for lim in self.by_tier.values() if self._near(lim, size, parsed)}
        for counter in counters.values():
            if counter.exact and not size.counted(counter):
                await asyncio.to_thread(size.tokens, counter, exact=True)

    def too_long(self, parsed: ParsedRequest, tiers: Sequence[str]) -> InvalidRequest:
        """The 400 for a prompt that fits none of `tiers` (those the request may use)."""
        largest = max(tiers, key=lambda name: self.by_tier[name].context_tokens)
        plan = self.plan(largest, parsed)
        pinned = len(tiers) == 1
        where = f"tier {largest!r}" if pinned else f"the largest tier this request may use ({largest!r})"
        return InvalidRequest(
            f"This request's messages take {plan.prompt_tokens} tokens, which leaves no room for an answer in"
            f" {where}: its maximum context length is {plan.context_tokens} tokens.",
            param="messages",
            code=CONTEXT_CODE,
        )


def _load(tier: str, path: Path) -> TokenCounter:
    try:
        return load_counter(path)
    except Exception as err:  # tokenizers raises a bare Exception for a file it cannot parse
        raise ProfileError(f"tier {tier!r}: tokenizer {path.name} cannot be read: {err}") from None


def prompt_size(parsed: ParsedRequest) -> PromptSize:
    """The request's prompt sizes, made once per request and kept with it."""
    size = parsed.prompt_size
    if size is None:
        size = parsed.prompt_size = PromptSize(parsed.counted_text(), len(parsed.checked.messages))
    return size


def apply_plan(body: dict[str, object], plan: OutputPlan) -> None:
    """Set the answer budget in the body sent to the tier, under the field(s) the caller used."""
    fields = [f for f in ("max_completion_tokens", "max_tokens") if body.get(f) is not None] or ["max_tokens"]
    for name in fields:
        body[name] = plan.max_tokens
