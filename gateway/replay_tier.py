"""A replay tier: a fake engine that answers each prompt with what one real model answered.

`tiergate fake-upstream --replay FILE.jsonl --model KEY` serves this. The answers come from an
outcome table (router/offline's schema): for a chat request, the last user message's text (and,
failing that, all messages joined) is looked up after whitespace normalisation, and the response
model KEY really gave is returned. Prompts the table does not hold get an OpenAI-shaped 404, so a
harness that drifts from the table fails loudly instead of being scored on made-up text.

Timing and capacity make load visible, as on a real GPU:
- time to first token and per-token decode time come from the capacity planner for a model on a
  GPU (`LatencyPlan`, from a `MODEL@GPU[xN]` spec), or from fixed milliseconds;
- at most `max_batch` requests are decoded at once; up to `max_queue` more wait in FIFO order
  (the wait is queueing delay the caller sees); beyond that the tier answers 503 + Retry-After.

Logprobs, when asked, are SYNTHETIC: no model produced them. Each token's probability is derived
from the recorded score of the replayed answer (1.0 -> confident, 0.0 -> hesitant) plus a
deterministic jitter. That is a stand-in confidence signal, more faithful to correctness than a real
model's logprobs would be, so a verifier tuned on it looks better than it will on a real engine.
Every response that carries them says so in the `x-fake-logprobs` header.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
import unicodedata
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from router.capacity import CATALOGUE, GPUS, PlanInputs, plan
from router.capacity.architectures import catalogue_architecture
from router.offline.outcomes import OutcomeRow, canonical_model
from router.offline.tables import load_outcomes
from router.runtime.prompt_features import CHARS_PER_TOKEN, estimate_tokens

SYNTHETIC_LOGPROBS_HEADER = "x-fake-logprobs"
SYNTHETIC_LOGPROBS_VALUE = "synthetic-from-recorded-score"
# Sequence length the decode step is planned for: prompt plus answer of a typical benchmark row.
# The KV read per step grows with it; the tables' prompts are mostly under 2k tokens.
PLAN_CONTEXT_TOKENS = 2048
_WS = re.compile(r"\s+")


class ReplayError(ValueError):
    """A replay flag or table that cannot be served; the message says which and why."""


def normalise_prompt(text: str) -> str:
    """Unicode NFC, whitespace runs folded to one space, ends stripped: chat clients and JSON
    round trips change line endings and trailing spaces, never the words."""
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


def token_count(text: str) -> int:
    """Tokens of `text` as the gateway estimates them (one rule, so usage and routing agree)."""
    return estimate_tokens(text)


def split_tokens(text: str) -> list[str]:
    """The answer cut into pieces of CHARS_PER_TOKEN characters: the unit of streaming and logprobs."""
    step = max(int(CHARS_PER_TOKEN), 1)
    return [text[i : i + step] for i in range(0, len(text), step)] or [""]


@dataclass(frozen=True, slots=True)
class Recorded:
    """One prompt's recorded answer by the replayed model, and the score it earned."""

    row_id: str
    answer: str
    score: float


class ReplayTable:
    """Normalised prompt -> the replayed model's recorded answer. The first row of a prompt wins."""

    def __init__(self, rows: Iterable[OutcomeRow], model: str) -> None:
        self.model = canonical_model(model)
        self._by_prompt: dict[str, Recorded] = {}
        self.duplicates = 0
        seen_models: set[str] = set()
        for row in rows:
            seen_models.update(row.responses)
            answer = row.responses.get(self.model)
            if answer is None or self.model not in row.scores:
                continue
            key = normalise_prompt(row.prompt)
            if key in self._by_prompt:
                self.duplicates += 1
                continue
            self._by_prompt[key] = Recorded(row.id, answer, row.scores[self.model])
        if not self._by_prompt:
            known = ", ".join(sorted(seen_models)) or "none"
            raise ReplayError(f"no row holds a response and score of model {model!r}; models with responses: {known}")

    @classmethod
    def from_files(cls, paths: Sequence[str | Path], model: str) -> ReplayTable:
        try:
            rows = load_outcomes(paths)
        except (OSError, ValueError) as err:
            raise ReplayError(f"cannot read the outcome table: {err}") from None
        return cls(rows, model)

    def __len__(self) -> int:
        return len(self._by_prompt)

    def lookup(self, messages: Any) -> Recorded | None:
        """The recorded answer for a chat's last user message, else for all its messages joined."""
        if not isinstance(messages, list):
            return None
        texts = [(m.get("role"), _content_text(m.get("content"))) for m in messages if isinstance(m, dict)]
        users = [t for role, t in texts if role == "user"]
        if users:
            hit = self._by_prompt.get(normalise_prompt(users[-1]))
            if hit is not None:
                return hit
        return self._by_prompt.get(normalise_prompt("\n".join(t for _, t in texts)))


def _content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of an OpenAI content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


@dataclass(frozen=True, slots=True)
class LatencyPlan:
    """Timing and price of one model on one GPU layout, from the capacity planner.

    TTFT is prefill: planned at two prompt lengths and interpolated linearly (prefill is
    compute-bound, so linear in prompt tokens above a fixed weight-read floor). Decode time per
    token is planned at batch 1 and at `max_batch` (every sequence at PLAN_CONTEXT_TOKENS) and
    interpolated by how many requests are decoding: a bandwidth-bound step reads the weights once
    plus each sequence's KV, which is linear in the batch. Price per token is the planner's USD per
    output token at a full batch of `max_batch`, the throughput this tier is allowed to reach.
    """

    spec: str
    model: str
    gpu: str
    gpus: int
    max_batch: int
    ttft_base_ms: float
    ttft_ms_per_prompt_token: float
    decode_ms_batch1: float
    decode_ms_full: float
    usd_per_token: float
    price_per_gpu_hour_usd: float
    params_billions: float

    def ttft_ms(self, prompt_tokens: int) -> float:
        return self.ttft_base_ms + self.ttft_ms_per_prompt_token * prompt_tokens

    def decode_ms(self, batch: int) -> float:
        if self.max_batch <= 1:
            return self.decode_ms_full
        share = (min(max(batch, 1), self.max_batch) - 1) / (self.max_batch - 1)
        return self.decode_ms_batch1 + share * (self.decode_ms_full - self.decode_ms_batch1)


def _gpu_key(name: str) -> str:
    key = name.lower()
    if key in GPUS:
        return key
    # "h100" is unambiguous shorthand for "h100-80gb"; "a100" is not and is refused below.
    matches = [k for k in GPUS if k.startswith(key)]
    if len(matches) == 1:
        return matches[0]
    raise ReplayError(f"unknown or ambiguous gpu {name!r}; valid: {', '.join(GPUS)}")


def parse_latency_spec(spec: str) -> tuple[str, str, int | None]:
    """'MODEL@GPU' or 'MODEL@GPUxN' -> (catalogue model, GPU key, GPUs or None for the minimum)."""
    model, sep, where = spec.partition("@")
    if not sep or not model or not where:
        raise ReplayError(f"latency plan {spec!r} is not MODEL@GPU[xN], e.g. llama-3.2-1b@l4 or llama-3.3-70b@h100x4")
    if model.lower() not in CATALOGUE:
        raise ReplayError(f"latency plan {spec!r}: unknown model {model!r}; catalogue: {', '.join(CATALOGUE)}")
    gpus: int | None = None
    counted = re.fullmatch(r"(.+?)x(\d+)", where)
    if counted is not None:
        where, gpus = counted.group(1), int(counted.group(2))
        if gpus < 1:
            raise ReplayError(f"latency plan {spec!r}: the GPU count must be >= 1")
    return model.lower(), _gpu_key(where), gpus


def latency_plan(spec: str, max_batch: int) -> LatencyPlan:
    """Ask the planner about `spec` (MODEL@GPU[xN]) for a tier that decodes at most `max_batch` at once."""
    if max_batch < 1:
        raise ReplayError("max_batch must be >= 1")
    model, gpu_key, gpus = parse_latency_spec(spec)
    arch = catalogue_architecture(model)
    device = GPUS[gpu_key]
    short, long = 128, PLAN_CONTEXT_TOKENS
    p_short = plan(arch, device, PlanInputs(gpus=gpus, context_tokens=PLAN_CONTEXT_TOKENS, prompt_tokens=short))
    p_long = plan(arch, device, PlanInputs(gpus=gpus, context_tokens=PLAN_CONTEXT_TOKENS, prompt_tokens=long))
    if not p_short.fits:
        raise ReplayError(f"latency plan {spec!r}: {p_short.fit_problem or 'does not fit'}")
    slope = (p_long.ttft_ms_estimate - p_short.ttft_ms_estimate) / (long - short)
    n_gpus = p_short.gpus

    def decode_ms_at(batch: int) -> float:
        # A KV pool sized for exactly `batch` sequences makes the planner's decode step the one of
        # `batch` sequences (plus a block of slack per worker for its rounding to whole blocks).
        per_worker = -(-batch * PLAN_CONTEXT_TOKENS * p_short.kv_bytes_per_token // n_gpus)
        budget = per_worker + p_short.block_size_tokens * p_short.kv_bytes_per_token
        sized = plan(arch, device, PlanInputs(gpus=n_gpus, context_tokens=PLAN_CONTEXT_TOKENS, kv_budget_bytes=budget))
        if not sized.fits or sized.max_batch < batch:
            raise ReplayError(
                f"latency plan {spec!r}: {batch} sequences of {PLAN_CONTEXT_TOKENS} tokens do not fit"
                f" ({sized.fit_problem or f'max batch {sized.max_batch}'}); lower --max-batch"
            )
        return 1e3 / sized.decode_tokens_per_s_per_seq

    full_ms = decode_ms_at(max_batch)
    price = p_short.price_per_gpu_hour_usd
    # Dollars per token: the GPUs' hourly price over the tokens a full batch decodes in an hour,
    # as the planner's usd_per_million_tokens is defined (utilization 1), at this tier's batch.
    tokens_per_hour = max_batch * 3600e3 / full_ms
    return LatencyPlan(
        spec=spec,
        model=model,
        gpu=gpu_key,
        gpus=n_gpus,
        max_batch=max_batch,
        ttft_base_ms=max(p_short.ttft_ms_estimate - slope * short, 0.0),
        ttft_ms_per_prompt_token=slope,
        decode_ms_batch1=decode_ms_at(1),
        decode_ms_full=full_ms,
        usd_per_token=price * n_gpus / tokens_per_hour,
        price_per_gpu_hour_usd=price,
        params_billions=p_short.params_total / 1e9,
    )


class QueueFull(Exception):
    """Every batch slot is busy and the FIFO queue holds its maximum."""


class BatchGate:
    """At most `max_batch` holders at once; up to `max_queue` waiters served first come, first served.

    Written out rather than an asyncio.Semaphore so the FIFO order and the queue bound are explicit
    and a cancelled waiter (the caller hung up) leaves the queue without taking a slot.
    """

    def __init__(self, max_batch: int, max_queue: int) -> None:
        if max_batch < 1 or max_queue < 0:
            raise ReplayError("max_batch must be >= 1 and max_queue >= 0")
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        if self.active < self.max_batch and not self._waiters:
            self.active += 1
            return
        if len(self._waiters) >= self.max_queue:
            raise QueueFull
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as the caller left: pass it on.
                self.release()
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        # Hand the slot straight to the oldest waiter, so a newcomer cannot overtake the queue.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """What `--replay` serves: the table, the timing (a plan, else fixed ms) and the capacity."""

    table: ReplayTable
    plan: LatencyPlan | None = None
    ttft_ms: float = 0.0
    token_delay_ms: float = 0.0
    max_batch: int = 8
    max_queue: int = 64
    retry_after_s: int = 1
    # Off by default: the outcome tables carry no logprobs, and a verifier fed ones derived from the
    # recorded score would look better live than it can on a real engine.
    synthetic_logprobs: bool = False


def synthetic_logprobs(tokens: Sequence[str], score: float, seed: str, top_n: int) -> dict[str, Any]:
    """OpenAI-shaped token logprobs derived from the recorded score (see the module docstring).

    p = 0.35 + 0.6 * score, moved by a jitter of at most +-0.04 from a hash of (seed, position),
    so the same request always gets the same numbers.
    """
    content = []
    base = 0.35 + 0.6 * min(max(score, 0.0), 1.0)
    for i, tok in enumerate(tokens):
        digest = hashlib.blake2b(f"{seed}\0{i}".encode(), digest_size=2).digest()
        jitter = (int.from_bytes(digest, "big") / 65535.0 - 0.5) * 0.08
        lp = math.log(min(max(base + jitter, 0.01), 0.999))
        rest = math.log(max((1.0 - math.exp(lp)) / max(top_n, 1), 1e-6))
        alternatives = [{"token": tok, "logprob": lp, "bytes": list(tok.encode())}]
        alternatives += [{"token": f"{tok}~{k}", "logprob": rest, "bytes": None} for k in range(1, top_n)]
        content.append({"token": tok, "logprob": lp, "bytes": list(tok.encode()), "top_logprobs": alternatives[:top_n]})
    return {"content": content}


class ReplayTier:
    """The chat handler of a replay fake; `FakeUpstream` delegates to it."""

    def __init__(self, config: ReplayConfig) -> None:
        self.config = config
        self.gate = BatchGate(config.max_batch, config.max_queue)
        self.served = 0
        self.unknown = 0
        self.rejected = 0

    def stats(self) -> dict[str, Any]:
        return {
            "replay_rows": len(self.config.table),
            "replay_model": self.config.table.model,
            "served": self.served,
            "unknown_prompts": self.unknown,
            "rejected_queue_full": self.rejected,
            "active": self.gate.active,
            "waiting": self.gate.waiting,
        }

    def _ttft_ms(self, prompt_tokens: int) -> float:
        p = self.config.plan
        return p.ttft_ms(prompt_tokens) if p else self.config.ttft_ms

    def _token_ms(self) -> float:
        p = self.config.plan
        return p.decode_ms(self.gate.active) if p else self.config.token_delay_ms

    async def chat(self, request: web.Request, body: dict[str, Any], request_number: int) -> web.StreamResponse:
        messages = body.get("messages")
        hit = self.config.table.lookup(messages)
        if hit is None:
            self.unknown += 1
            return _error(
                404,
                f"This replay tier holds no recorded answer of {self.config.table.model} for this prompt"
                f" ({len(self.config.table)} prompts loaded).",
                code="prompt_not_in_table",
                err_type="not_found_error",
            )
        try:
            await self.gate.acquire()
        except QueueFull:
            self.rejected += 1
            resp = _error(
                503,
                f"The replay tier is at capacity ({self.gate.max_batch} running, {self.gate.max_queue} queued).",
                code="queue_full",
                err_type="server_error",
            )
            resp.headers["Retry-After"] = str(self.config.retry_after_s)
            return resp
        try:
            return await self._answer(request, body, hit, request_number)
        finally:
            self.gate.release()

    async def _answer(
        self, request: web.Request, body: dict[str, Any], hit: Recorded, request_number: int
    ) -> web.StreamResponse:
        prompt_text = "\n".join(_content_text(m.get("content")) for m in body["messages"] if isinstance(m, dict))
        prompt_tokens = token_count(prompt_text)
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        answer, finish = hit.answer, "stop"
        if cap is not None and token_count(answer) > int(cap):
            answer, finish = answer[: int(int(cap) * CHARS_PER_TOKEN)], "length"
        tokens = split_tokens(answer)
        want_logprobs = bool(body.get("logprobs")) and self.config.synthetic_logprobs
        top_n = int(body.get("top_logprobs") or 0)
        logprobs = synthetic_logprobs(tokens, hit.score, hit.row_id, top_n) if want_logprobs else None
        headers = {SYNTHETIC_LOGPROBS_HEADER: SYNTHETIC_LOGPROBS_VALUE} if want_logprobs else {}
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": token_count(answer),
            "total_tokens": prompt_tokens + token_count(answer),
        }
        base = {
            "id": f"chatcmpl-replay{request_number}",
            "created": int(time.time()),
            "model": body.get("model"),
        }
        await asyncio.sleep(self._ttft_ms(prompt_tokens) / 1000.0)
        if body.get("stream"):
            return await self._stream(request, body, base, tokens, logprobs, finish, usage, headers)
        await asyncio.sleep(self._token_ms() * max(len(tokens) - 1, 0) / 1000.0)
        self.served += 1
        reply = {
            **base,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "logprobs": logprobs,
                    "finish_reason": finish,
                }
            ],
            "usage": usage,
        }
        return web.Response(body=orjson.dumps(reply), content_type="application/json", headers=headers)

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        base: dict[str, Any],
        tokens: list[str],
        logprobs: dict[str, Any] | None,
        finish: str,
        usage: dict[str, int],
        headers: dict[str, str],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache", **headers})
        await resp.prepare(request)
        base = {**base, "object": "chat.completion.chunk"}

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            await resp.write(b"data: " + orjson.dumps({**base, "choices": choices, **extra}) + b"\n\n")

        opening = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        await send([opening])
        for i, tok in enumerate(tokens):
            if i:
                # The first token came with the prefill; each later one costs a decode step.
                await asyncio.sleep(self._token_ms() / 1000.0)
            lp = {"content": [logprobs["content"][i]]} if logprobs else None
            await send([{"index": 0, "delta": {"content": tok}, "logprobs": lp, "finish_reason": None}])
        await send([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}])
        if (body.get("stream_options") or {}).get("include_usage"):
            await send([], usage=usage)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        self.served += 1
        return resp


def _error(status: int, message: str, *, code: str, err_type: str) -> web.Response:
    body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
