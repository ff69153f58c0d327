"""Admission control per tier: bound the tokens in flight by the tier's KV-cache capacity.

A request holds `prompt tokens + max_tokens` of the tier's KV budget (capacity per replica from the
capacity planner x replicas) from admission until its answer is done. When the budget is spent the
request waits in a bounded FIFO queue for at most `queue_timeout_s`; a full queue or a wait that runs
out answers at once with 503 + Retry-After instead of queueing forever.

Latency classes get smaller batch targets, as the strategy note asks (at most 4 sequences when the
caller needs < 100 ms): a realtime request is only admitted while the tier runs fewer than
`realtime_max_seqs` sequences, and it never queues — it is better sent to another tier or refused
fast than answered late.

What a request holds is a `Lease`: taken once at admission, released exactly once by whoever
finishes the request (the chat service, after the last byte went out or the request failed),
however it ends. Releasing twice is harmless, so no exit path needs to know what another did.

What a request reserves is sized by gateway/limits.py: its prompt (counted with the tier's
tokenizer near the context limit, else the bytes/4 estimate of `router.runtime.prompt_features`)
plus the max_tokens the tier's context leaves, so an absurd max_tokens reserves one context at most.

With N gateway processes in front of the same tiers (`serve --workers`, `gateway.replicas`), each
process admits against its share, `process_share(capacity, N)`: the N shares together never exceed
what the engine holds, whichever process a request lands on. The price is that one process may
refuse while another has room; the engines' own running/waiting gauges (gateway/engine_load.py)
feed the latency estimate, not admission, because a scrape every 0.5 s is too late to stop a burst.
A request larger than its process's share runs alone in that process (see `_cost`); when a share is
smaller than a tier's context the gateway says so at start-up, since N such requests at once could
exceed the engine's pool (vLLM then queues or preempts; it does not fail).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import Overloaded
from router.runtime.prompt_features import estimate_tokens

# The one token estimate (router.runtime.prompt_features), named for what admission sizes with it.
estimate_prompt_tokens = estimate_tokens


def process_share(capacity_tokens: int | None, processes: int) -> int | None:
    """One gateway process's part of a tier's KV budget when `processes` share it (None: unbounded).

    Rounded down, so the shares never add up to more than the budget; at least one token, so a
    tiny budget still admits one request at a time per process.
    """
    if processes < 1:
        raise ValueError("processes must be >= 1")
    if capacity_tokens is None:
        return None
    return max(capacity_tokens // processes, 1)


@dataclass(slots=True)
class _Waiter:
    tokens: int
    future: asyncio.Future[None]


class Lease:
    """One request's share of a tier: its KV budget and, while streaming, its open connection."""

    __slots__ = ("_closers", "_cost", "_gate", "released")

    def __init__(self, gate: TierAdmission, cost: int) -> None:
        self._gate = gate
        self._cost = cost
        self._closers: list[Callable[[], None]] = []
        self.released = False

    @property
    def tier(self) -> str:
        return self._gate.name

    def hold(self, close: Callable[[], None]) -> None:
        """Close this resource too on release (the tier's open stream: the tier then stops generating)."""
        self._closers.append(close)

    def release(self) -> None:
        """Give everything back; every call after the first does nothing."""
        if self.released:
            return
        self.released = True
        try:
            for close in self._closers:
                close()
        finally:
            self._gate.release(self._cost)


class TierAdmission:
    def __init__(
        self,
        name: str,
        *,
        capacity_tokens: int | None,
        max_queue: int = 64,
        queue_timeout_s: float = 5.0,
        realtime_max_seqs: int = 4,
    ) -> None:
        if capacity_tokens is not None and capacity_tokens < 1:
            raise ValueError("capacity_tokens must be positive")
        self.name = name
        self.capacity_tokens = capacity_tokens
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.realtime_max_seqs = realtime_max_seqs
        self.in_flight_tokens = 0
        self.in_flight_seqs = 0
        self._queue: deque[_Waiter] = deque()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def _cost(self, tokens: int) -> int:
        # A request larger than the whole budget would wait forever; it runs alone instead and the
        # engine itself (vLLM's context check) has the last word on whether it fits.
        return tokens if self.capacity_tokens is None else min(tokens, self.capacity_tokens)

    def _fits(self, cost: int) -> bool:
        return self.capacity_tokens is None or self.in_flight_tokens + cost <= self.capacity_tokens

    def try_admit(self, tokens: int, *, realtime: bool = False) -> int | None:
        """Admit now if the budget allows and nobody is queued ahead; never waits.

        Returns the cost to hand back to `release`, or None when not admitted.
        """
        cost = self._cost(tokens)
        if realtime and self.in_flight_seqs >= self.realtime_max_seqs:
            return None
        if self._queue or not self._fits(cost):
            return None
        self._take(cost)
        return cost

    async def admit(self, tokens: int, *, realtime: bool = False) -> int:
        """Admit, queueing if needed; returns the cost to hand back to `release`. Raises Overloaded."""
        cost = self._cost(tokens)
        if self.try_admit(cost, realtime=realtime) is not None:
            return cost
        if realtime:
            raise Overloaded(f"Tier {self.name} is at its realtime batch target; retry shortly.", retry_after_s=1)
        if len(self._queue) >= self.max_queue or self.max_queue == 0:
            raise Overloaded(f"Tier {self.name} is at capacity and its queue is full.", retry_after_s=2)
        waiter = _Waiter(cost, asyncio.get_running_loop().create_future())
        self._queue.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), self.queue_timeout_s)
        except TimeoutError:
            if waiter.future.done():
                return cost  # admitted in the same instant the wait ran out
            self._queue.remove(waiter)
            raise Overloaded(
                f"Tier {self.name} stayed at capacity for {self.queue_timeout_s:g} s.",
                retry_after_s=max(1, math.ceil(self.queue_timeout_s)),
            ) from None
        except asyncio.CancelledError:
            if waiter.future.done():
                self.release(cost)  # admitted, but the caller left before using it
            elif waiter in self._queue:
                self._queue.remove(waiter)
            raise
        return cost

    def try_lease(self, tokens: int, *, realtime: bool = False) -> Lease | None:
        """`try_admit`, as a Lease."""
        cost = self.try_admit(tokens, realtime=realtime)
        return None if cost is None else Lease(self, cost)

    async def lease(self, tokens: int, *, realtime: bool = False) -> Lease:
        """`admit`, as a Lease."""
        return Lease(self, await self.admit(tokens, realtime=realtime))

    def release(self, cost: int) -> None:
        self.in_flight_tokens -= cost
        self.in_flight_seqs -= 1
        # Strict FIFO: the head waits until it fits, so large requests are not starved by small ones.
        while self._queue and self._fits(self._queue[0].tokens):
            waiter = self._queue.popleft()
            if waiter.future.done():
                continue
            self._take(waiter.tokens)
            waiter.future.set_result(None)

    def _take(self, cost: int) -> None:
        self.in_flight_tokens += cost
        self.in_flight_seqs += 1
