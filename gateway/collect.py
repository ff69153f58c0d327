"""`tiergate router collect`: a calibration sample from your own tiers, asked through the gateway.

`router calibrate` needs a labelled sample of your traffic with every rung's answer. This asks each
named tier, for each prompt of a JSONL file, through a running gateway (pinned: `model: <tier>`,
unstreamed, `logprobs: true`, temperature 0), and writes outcome rows keyed by tier name: the
prompt as the router reads it (every message's text, in order), each tier's answer, its token
logprobs and its cost (the gateway's `x-tiergate-cost-usd`; left out where the tier has no price,
and calibration needs it: give the tiers `price_per_million_*_tokens_usd` in the profile).

Labels: where a prompt row carries a reference `answer`, each tier's answer scores 1.0 when its
final answer equals the reference's (`router.runtime.answer_features.final_answer`: an option
letter, a number, a code block, else the text), else 0.0, the way an exact-match benchmark is
judged. Where it carries `scores`, they are kept. Other rows get empty `scores` for your judge to
fill (calibrate refuses a row without them, naming its line).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway.cascade import answer_logprobs, answer_text
from gateway.errors import InvalidRequest
from gateway.protocol import parse_chat_request
from router.offline.outcomes import finite_number
from router.runtime.answer_features import final_answer


class CollectError(ValueError):
    """A prompt file the collector cannot read (the message names the line)."""


@dataclass(frozen=True)
class PromptRow:
    id: str
    benchmark: str
    messages: list[dict[str, Any]]
    text: str  # what the router reads: every message's text, in order
    reference: str | None
    scores: dict[str, float]


@dataclass(frozen=True)
class CollectSettings:
    concurrency: int = 4
    max_tokens: int | None = None
    timeout_s: float = 300.0
    api_key: str | None = None


def _prompt_row(data: Any, number: int) -> PromptRow:
    if not isinstance(data, dict):
        raise CollectError(f"line {number}: a JSON object is expected")
    if isinstance(data.get("prompt"), str):
        messages: list[dict[str, Any]] = [{"role": "user", "content": data["prompt"]}]
    elif isinstance(data.get("messages"), list):
        messages = data["messages"]
    else:
        raise CollectError(f"line {number}: give `prompt` (a string) or `messages` (a chat message list)")
    try:
        parsed = parse_chat_request(orjson.dumps({"model": "auto", "messages": messages}))
    except InvalidRequest as err:  # the gateway's own validation: the message it would answer with
        raise CollectError(f"line {number}: {err.message}") from None
    reference = data.get("answer")
    raw_scores = data.get("scores")
    scores = (
        {str(k): float(v) for k, v in raw_scores.items() if finite_number(v)} if isinstance(raw_scores, dict) else {}
    )
    return PromptRow(
        id=str(data.get("id", f"row-{number}")),
        benchmark=str(data.get("benchmark", "collected")),
        messages=messages,
        text=parsed.routing_text(),
        reference=None if reference is None else str(reference),
        scores=scores,
    )


def read_prompts(path: Path) -> list[PromptRow]:
    """Rows of a JSONL prompt file: `prompt` or `messages`, optional `id`, `benchmark`, `answer`, `scores`."""
    rows: list[PromptRow] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise CollectError(f"line {number}: not JSON ({err})") from None
            rows.append(_prompt_row(data, number))
    return rows


def exact_match(answer: str, reference: str) -> float:
    """1.0 when the answer's final answer is the reference's (see module), else 0.0."""
    return 1.0 if final_answer(answer) == final_answer(reference) else 0.0


@dataclass(frozen=True)
class TierReply:
    text: str
    logprobs: list[float] | None
    cost_usd: float | None


async def _ask(
    session: aiohttp.ClientSession, url: str, row: PromptRow, tier: str, settings: CollectSettings
) -> TierReply | str:
    """One pinned, unstreamed call; the reply, or why there is none."""
    body: dict[str, Any] = {"model": tier, "messages": row.messages, "logprobs": True, "temperature": 0}
    if settings.max_tokens is not None:
        body["max_tokens"] = settings.max_tokens
    headers = {"content-type": "application/json"}
    if settings.api_key:
        headers["authorization"] = f"Bearer {settings.api_key}"
    try:
        async with session.post(url, data=orjson.dumps(body), headers=headers) as resp:
            raw = await resp.read()
            if resp.status != 200:
                return f"HTTP {resp.status}: {raw[:200].decode(errors='replace')}"
            cost = resp.headers.get("x-tiergate-cost-usd")
    except (TimeoutError, aiohttp.ClientError) as err:
        return f"{type(err).__name__}: {err}"
    data = orjson.loads(raw)
    # A tier the profile gives no price charges 0: unknown to calibration, not free.
    usd = float(cost) if cost is not None else 0.0
    return TierReply(answer_text(data), answer_logprobs(data), usd if usd > 0 else None)


def outcome_row(row: PromptRow, replies: Mapping[str, TierReply]) -> dict[str, Any]:
    """The outcome-table row for `row` (model keys are tier names)."""
    scores = dict(row.scores)
    if row.reference is not None:
        for tier, reply in replies.items():
            scores.setdefault(tier, exact_match(reply.text, row.reference))
    out: dict[str, Any] = {
        "id": row.id,
        "benchmark": row.benchmark,
        "prompt": row.text,
        "scores": scores,
        "responses": {tier: reply.text for tier, reply in replies.items()},
        "logprobs": {tier: reply.logprobs for tier, reply in replies.items() if reply.logprobs},
        "cost_usd": {tier: reply.cost_usd for tier, reply in replies.items() if reply.cost_usd is not None},
    }
    if row.reference is not None:
        out["answer"] = row.reference
    return out


@dataclass(frozen=True)
class Collected:
    rows: list[dict[str, Any]]
    failures: list[str]  # "<row id> <tier>: why", for every call that got no answer


async def collect(
    base_url: str,
    rows: Sequence[PromptRow],
    tiers: Sequence[str],
    settings: CollectSettings = CollectSettings(),
    progress: Callable[[str], None] = lambda _: None,
) -> Collected:
    """Ask every tier for every row (at most `settings.concurrency` calls at once), in row order.

    A row keeps the tiers that answered; a tier that failed is listed in `failures` (nothing is
    retried here: the gateway already retries what is safe to).
    """
    url = f"{base_url.rstrip('/')}/chat/completions"
    gate = asyncio.Semaphore(settings.concurrency)
    done = 0

    async def one(session: aiohttp.ClientSession, row: PromptRow, tier: str) -> TierReply | str:
        nonlocal done
        async with gate:
            reply = await _ask(session, url, row, tier, settings)
        done += 1
        if done % max(1, len(rows) * len(tiers) // 20) == 0:
            progress(f"{done}/{len(rows) * len(tiers)} answers")
        return reply

    timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        replies = await asyncio.gather(*(one(session, row, tier) for row in rows for tier in tiers))
    out: list[dict[str, Any]] = []
    failures: list[str] = []
    for i, row in enumerate(rows):
        got: dict[str, TierReply] = {}
        for j, tier in enumerate(tiers):
            reply = replies[i * len(tiers) + j]
            if isinstance(reply, str):
                failures.append(f"{row.id} {tier}: {reply}")
            else:
                got[tier] = reply
        out.append(outcome_row(row, got))
    return Collected(out, failures)
