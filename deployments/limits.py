"""What the engine behind each tier accepts: its context length, and the tokenizer that counts for it.

The gateway checks prompts against these before it calls a tier (gateway/limits.py); they are read
from the profile here, where the engine's own settings live, so the gateway and the engine built by
deployments/app.py agree on one number.

- Context: the tier's `context_length_tokens`, lowered by the engine's `serving.max_model_len_tokens`
  (vLLM's max_model_len) when the tier, or the tier carrying the serving section of its engine, sets one.
- Tokenizer: the tier's `tokenizer` (a tokenizer.json file, a folder holding one, or 'stand-in'), else
  the one its engine's tiers name, else the serving model's local folder when it has a tokenizer.json
  (the stand-in model once prepared). None means the gateway falls back to the bytes/4 estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deployments.model import STAND_IN_SOURCE, stand_in_dir
from deployments.profile import ProfileError, TierSpec

TOKENIZER_FILE = "tokenizer.json"


def _engine_tiers(tier: TierSpec, tiers: Sequence[TierSpec]) -> list[TierSpec]:
    # The tier itself first: its own settings win over its engine siblings'.
    return [tier, *(t for t in tiers if t.engine == tier.engine and t is not tier)]


def context_tokens(tier: TierSpec, tiers: Sequence[TierSpec] = ()) -> int:
    """Prompt plus answer tokens `tier` accepts: its context length, capped by its engine's max_model_len."""
    limit = tier.context_length_tokens
    for t in _engine_tiers(tier, tiers):
        if t.serving is not None and t.serving.max_model_len_tokens is not None:
            limit = min(limit, t.serving.max_model_len_tokens)
    return limit


def tokenizer_file(tier: TierSpec, tiers: Sequence[TierSpec] = (), cache_root: Path | None = None) -> Path | None:
    """The tokenizer.json that counts `tier`'s prompt tokens, or None (use the estimate).

    A tokenizer the profile names must exist (ProfileError otherwise: a typo must not silently turn
    into the estimate); one derived from the serving model is used only when it is there.
    `cache_root` is TIERGATE_CACHE_DIR's value (default: read from the environment).
    """
    family = _engine_tiers(tier, tiers)
    named = next((t for t in family if t.tokenizer is not None), None)
    if named is not None:
        assert named.tokenizer is not None
        path = _resolve(named.tokenizer, cache_root)
        if not path.is_file():
            hint = " (run `tiergate model prepare`)" if named.tokenizer == STAND_IN_SOURCE else ""
            raise ProfileError(f"tier {named.name!r}: tokenizer {named.tokenizer!r}: no {TOKENIZER_FILE} there{hint}")
        return path
    for t in family:
        if t.serving is None:
            continue
        source = t.serving.model_source
        if source != STAND_IN_SOURCE and not Path(source).is_dir():
            continue  # a hub id: the gateway has no copy of its files
        path = _resolve(source, cache_root)
        return path if path.is_file() else None
    return None


def _resolve(name: str, cache_root: Path | None) -> Path:
    if name == STAND_IN_SOURCE:
        return stand_in_dir(cache_root) / TOKENIZER_FILE
    path = Path(name).expanduser()
    return path / TOKENIZER_FILE if path.is_dir() else path
