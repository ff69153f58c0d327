"""The per-request context: the facts about one request that its response headers, metrics and
access-log line report.

RequestContextMiddleware creates it and reads it at the end; the code that learns a fact records it
through one of the methods below, at the moment it is known, so each fact has one writer:

    authenticated      AuthMiddleware            which key (its id, never the key)
    routed / moved_to  the service               tier, latency class, routing reason, stream or not
    fallen_from        the service               tiers that failed before the one answering (fallback)
    waited_since       service and relay         seconds spent waiting on the tier
    first_token        service and relay         time to the first token
    count_usage        service and relay         the tier's token counts
    failed             service and relay         the error code of an answer that failed
    client_left        service and SSE response  the caller hung up (reported as 499)
    attempted          the service               tiers tried, escalations, cost of all attempts, SLO
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from starlette.types import Scope

from gateway.errors import HTTPError

SCOPE_KEY = "tiergate"
# The passed-through header names at most this many fields, each cut to this many characters: a body
# with 20,000 unknown fields made a 129 kB header, which proxies and clients refuse.
PASSED_THROUGH_MAX_NAMES = 16
PASSED_THROUGH_MAX_CHARS = 48


@dataclass(slots=True)
class RequestContext:
    request_id: str
    t0: float
    key_id: str = "-"
    tier: str | None = None
    latency_class: str | None = None
    route_reason: str | None = None
    stream: bool = False
    status: int = 0
    # Seconds spent waiting on the tier; subtracted from wall time to give the gateway's overhead.
    upstream_s: float = 0.0
    ttft_s: float | None = None
    # Seconds from the start to the last streamed event relayed live (the inter-token latency's end).
    last_token_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error_code: str | None = None
    client_closed: bool = False
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    # What the response headers say about how the answer was made (set once the answer is known).
    tiers_tried: tuple[str, ...] = ()
    escalations: int = 0
    cost_usd: float | None = None
    slo: str | None = None
    # Tiers that failed (or refused) before the answering one took the request over, in order.
    fallen_from: tuple[str, ...] = ()

    def authenticated(self, key_id: str) -> None:
        self.key_id = key_id

    def routed(
        self, tier: str, *, latency_class: str, reason: str | None, stream: bool, passed_through: list[str]
    ) -> None:
        """The routing decision, and the request fields passed to the tier unchecked (named in a header)."""
        self.tier, self.latency_class, self.route_reason, self.stream = tier, latency_class, reason, stream
        if passed_through:
            self.extra_headers.append((b"x-tiergate-passed-through", passed_through_header(passed_through)))

    def moved_to(self, tier: str, reason: str) -> None:
        """Admission sent the request to another tier than the one routing chose."""
        self.tier, self.route_reason = tier, reason

    def waited_since(self, t: float) -> float:
        """Count the time since `t` (perf_counter seconds) as waiting on the tier; returns now."""
        now = time.perf_counter()
        self.upstream_s += now - t
        return now

    def first_token(self, now: float) -> None:
        if self.ttft_s is None:
            self.ttft_s = now - self.t0

    def token_relayed(self, now: float) -> None:
        """A streamed event with choices went to the caller; `now` is when its batch arrived."""
        self.first_token(now)
        self.last_token_s = now - self.t0

    def inter_token_s(self) -> float | None:
        """Mean seconds between the tokens of a stream relayed live, from the first event to the last
        over the tier's completion tokens; None for answers sent whole or shorter than two tokens."""
        if self.ttft_s is None or self.last_token_s is None or self.completion_tokens < 2:
            return None
        return max(self.last_token_s - self.ttft_s, 0.0) / (self.completion_tokens - 1)

    def count_usage(self, usage: Any) -> None:
        """The tier's `usage` object, if it sent one; anything malformed counts as zero."""
        counted = usage_tokens(usage)
        if counted is not None:
            self.prompt_tokens, self.completion_tokens = counted

    def failed(self, err: HTTPError) -> None:
        self.error_code = err.code or err.error_type

    def client_left(self) -> None:
        self.client_closed = True

    def attempted(self, tiers: tuple[str, ...], escalations: int, cost_usd: float | None, slo: str) -> None:
        """How the answer was made: every tier asked, the climbs, the cost of all attempts, SLO met or missed.

        `cost_usd` is None when it is not known before the headers go out (a stream committed to one tier).
        """
        self.tiers_tried, self.escalations, self.cost_usd, self.slo = tiers, escalations, cost_usd, slo

    def outcome_headers(self) -> list[tuple[bytes, bytes]]:
        if not self.tiers_tried:
            return []
        out = [
            (b"x-tiergate-tiers-tried", ",".join(self.tiers_tried).encode()),
            (b"x-tiergate-escalations", str(self.escalations).encode()),
        ]
        if self.slo is not None:
            out.append((b"x-tiergate-slo", self.slo.encode()))
        if self.cost_usd is not None:
            out.append((b"x-tiergate-cost-usd", f"{self.cost_usd:.10f}".encode()))
        return out


def passed_through_header(names: list[str]) -> bytes:
    """The header value naming fields passed through unchecked: plain names as they are, any other
    character percent-encoded (a CR or LF in a field name made the server drop the answer), bounded."""
    shown = [quote(name[:PASSED_THROUGH_MAX_CHARS], safe="_-.") for name in names[:PASSED_THROUGH_MAX_NAMES]]
    if len(names) > PASSED_THROUGH_MAX_NAMES:
        shown.append(f"+{len(names) - PASSED_THROUGH_MAX_NAMES}-more")
    return ",".join(shown).encode("ascii")


def usage_tokens(usage: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens of a tier's `usage` object; None when it sent none, 0 for a bad count."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (prompt if isinstance(prompt, int) else 0, completion if isinstance(completion, int) else 0)


def context_of(scope: Scope) -> RequestContext:
    ctx = scope.get(SCOPE_KEY)
    if not isinstance(ctx, RequestContext):
        raise RuntimeError("RequestContextMiddleware is not installed")
    return ctx
