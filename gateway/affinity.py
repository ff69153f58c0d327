"""Conversation affinity: a conversation does not bounce down the ladder mid-task.

Once a tier answered a turn of a conversation, later turns start no lower than that tier: a
follow-up to an answer the large tier gave should not be answered by the small one, which never
saw how the conversation got there. The key is the caller's `x-tiergate-conversation-id`, else a
hash of every message but the last (the turns so far).

The store is per gateway process, bounded and expiring. With several gateway processes a
conversation keeps its floor only where its turns land (a sticky load balancer keeps them
together); losing it costs at most one cheaper first attempt, which the cascade corrects.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

HEADER = "x-tiergate-conversation-id"
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_TTL_S = 1800.0


def conversation_key(header: str | None, messages: Sequence[Any]) -> str | None:
    """The conversation's key, or None for a first turn without an id (nothing to remember yet)."""
    if header:
        return "id:" + header[:200]
    if len(messages) < 2:
        return None
    digest = hashlib.sha256()
    for msg in messages[:-1]:
        digest.update(repr((getattr(msg, "role", None), getattr(msg, "content", None))).encode())
    return "prefix:" + digest.hexdigest()


class AffinityStore:
    """key -> the highest tier index that answered it; least recently used keys go first."""

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_entries
        self._ttl = ttl_s
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def floor(self, key: str | None) -> int | None:
        if key is None:
            return None
        got = self._data.get(key)
        if got is None:
            return None
        if self._clock() - got[0] > self._ttl:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return got[1]

    def record(self, key: str | None, tier_index: int) -> None:
        if key is None:
            return
        old = self.floor(key)
        self._data[key] = (self._clock(), tier_index if old is None else max(old, tier_index))
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
