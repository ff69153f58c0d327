"""Per-key rate limits and spend budgets, as pure bookkeeping: every method takes the time.

Two clocks are passed in, never read here: `now` (monotonic seconds) paces the token buckets, and
`wall` (Unix seconds) places spend in budget windows aligned to the epoch, so a 86,400 s window is
a UTC day whichever process counts it. `gateway.access` feeds the real clocks; tests feed numbers.

- Requests per minute: a token bucket holding at most one minute's requests, refilled continuously;
  each request takes one.
- Tokens per minute: a bucket of the same shape, charged with the tokens a request actually used
  when it ends (they are not known before). A request is admitted while the bucket is not empty,
  so one request can overdraw it; the next then waits until it has refilled above zero.
- Spend: USD charged when a request ends, against the key's budget and its team's, per window.
  A request is admitted while both have something left; the last one may overshoot.

A refusal says which limit bound and how long until it would pass (the Retry-After).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Limit = Literal["requests", "tokens", "spend"]


@dataclass(slots=True)
class TokenBucket:
    """`capacity` units, refilled at `per_s` units a second; the level may go below zero (debt)."""

    capacity: float
    per_s: float
    level: float
    at: float

    @classmethod
    def per_minute(cls, units: float, now: float) -> TokenBucket:
        """A full bucket of `units` a minute."""
        return cls(capacity=units, per_s=units / 60.0, level=units, at=now)

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.level = min(self.capacity, self.level + (now - self.at) * self.per_s)
            self.at = now

    def wait_s(self, now: float, units: float) -> float:
        """Seconds until `units` are in the bucket (0 when they are now)."""
        self._refill(now)
        return max(units - self.level, 0.0) / self.per_s

    def wait_until_positive_s(self, now: float) -> float:
        """Seconds until the level is above zero (0 when it is now)."""
        self._refill(now)
        if self.level > 0.0:
            return 0.0
        # Refilled exactly to zero is still empty: ask for a sliver more.
        return (-self.level) / self.per_s + 1e-3

    def take(self, units: float, now: float) -> None:
        self._refill(now)
        self.level -= units


@dataclass(slots=True)
class SpendWindow:
    """USD spent against `budget_usd` in the current window of `period_s` seconds."""

    budget_usd: float
    period_s: float
    spent_usd: float = 0.0
    window: int = -1

    def _roll(self, wall: float) -> None:
        window = math.floor(wall / self.period_s)
        if window != self.window:
            self.window, self.spent_usd = window, 0.0

    def remaining_usd(self, wall: float) -> float:
        self._roll(wall)
        return max(self.budget_usd - self.spent_usd, 0.0)

    def wait_s(self, wall: float) -> float:
        """0 while budget remains; else seconds until the next window opens."""
        if self.remaining_usd(wall) > 0.0:
            return 0.0
        return (self.window + 1) * self.period_s - wall

    def charge(self, usd: float, wall: float) -> None:
        self._roll(wall)
        self.spent_usd += usd


@dataclass(frozen=True, slots=True)
class Refusal:
    limit: Limit
    retry_after_s: float
    message: str


class KeyQuota:
    """Everything one key is held to: its buckets, its budget, its team's budget (shared between keys)."""

    def __init__(
        self,
        *,
        now: float,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        budget: SpendWindow | None = None,
        team: SpendWindow | None = None,
        team_name: str | None = None,
    ) -> None:
        self.requests = TokenBucket.per_minute(requests_per_minute, now) if requests_per_minute else None
        self.tokens = TokenBucket.per_minute(tokens_per_minute, now) if tokens_per_minute else None
        self.budget = budget
        self.team = team
        self.team_name = team_name

    @property
    def has_budget(self) -> bool:
        return self.budget is not None or self.team is not None

    def admit(self, now: float, wall: float) -> Refusal | None:
        """Take one request, or refuse with the limit that binds longest (nothing is taken then)."""
        waits: list[Refusal] = []
        if self.requests is not None:
            wait = self.requests.wait_s(now, 1.0)
            if wait > 0.0:
                waits.append(Refusal("requests", wait, "Rate limit reached: requests per minute for this key."))
        if self.tokens is not None:
            wait = self.tokens.wait_until_positive_s(now)
            if wait > 0.0:
                waits.append(Refusal("tokens", wait, "Rate limit reached: tokens per minute for this key."))
        if self.budget is not None:
            wait = self.budget.wait_s(wall)
            if wait > 0.0:
                waits.append(Refusal("spend", wait, "Spend budget of this key is used up for this period."))
        if self.team is not None:
            wait = self.team.wait_s(wall)
            if wait > 0.0:
                waits.append(
                    Refusal("spend", wait, f"Spend budget of team {self.team_name!r} is used up for this period.")
                )
        if waits:
            return max(waits, key=lambda r: r.retry_after_s)
        if self.requests is not None:
            self.requests.take(1.0, now)
        return None

    def settle(self, *, tokens: int, cost_usd: float, now: float, wall: float) -> None:
        """Charge what an admitted request used, once it has ended."""
        if self.tokens is not None and tokens > 0:
            self.tokens.take(float(tokens), now)
        if cost_usd > 0.0:
            if self.budget is not None:
                self.budget.charge(cost_usd, wall)
            if self.team is not None:
                self.team.charge(cost_usd, wall)

    def remaining_usd(self, wall: float) -> float | None:
        """What the key can still spend this window: the lesser of its own and its team's; None without either."""
        left = [w.remaining_usd(wall) for w in (self.budget, self.team) if w is not None]
        return min(left) if left else None
