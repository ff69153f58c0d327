"""Load benchmark: a gateway over a fake fleet of known capacity, offered twice that, open loop.

Three fake tiers answer every request in a fixed time (first token after `--ttft-ms`, then
`--reply-tokens` tokens `--token-delay-ms` apart). Each tier's KV budget is set so that admission
lets exactly `--slots` requests run on it at once, so the fleet's capacity is known:
3 x slots / request time. Requests arrive at `--load` x that rate on a fixed schedule (open loop:
arrivals do not wait for answers, as real callers do not), pinned to the tiers in turn, a quarter
of them streamed. Every request carries its own id (`x-request-id`) and every answer is checked:

- accepted: 200, the gateway's request id is the one sent, the answer is whole (a stream ends with
  `[DONE]` and carries every token), and no other answer carried the same completion id;
- rejected: 503 or 429 with Retry-After (admission refused it); the time to that answer is the
  "rejected fast" latency (target: p99 under 5 ms);
- errors: any other answer; lost: no answer at all (connection error or timeout);
- duplicated: an answer that belongs to another request (its request id or completion id seen before).

Also reported: p50/p99 of accepted requests against the fake tier's own time measured in the same
run (the floor), goodput against the fleet's capacity, and the gateway process's resident memory
(RSS, from /proc) after warm-up and at the end. Loopback only; bounded by `--seconds`.

    python -m tests.bench.load [--seconds 180] [--load 2.0] [--out docs/benchmarks/load.md]

Exits non-zero when anything was lost, duplicated or answered with an error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import yaml

from gateway.prompt_tokens import PromptSize
from tests.procs import REPO, Proc, fake_upstream, free_port, running, tiergate_cmd, write_profile

TIERS = ("small", "medium", "large")
PROMPT = "Name the capital of France, request {rid}."
REJECTED_P99_TARGET_MS = 5.0


@dataclass(frozen=True)
class Fleet:
    ttft_ms: float
    token_delay_ms: float
    reply_tokens: int
    slots: int  # requests each tier admits at once

    @property
    def request_s(self) -> float:
        return (self.ttft_ms + self.token_delay_ms * self.reply_tokens) / 1000.0

    @property
    def capacity_rps(self) -> float:
        return len(TIERS) * self.slots / self.request_s


@dataclass
class Outcome:
    kind: str  # accepted | rejected | error | lost
    latency_ms: float  # as the caller saw it
    detail: str = ""
    gateway_ms: float | None = None  # the gateway's own time (its x-tiergate-overhead-ms header)


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)
    seen_request_ids: set[str] = field(default_factory=set)
    seen_completion_ids: set[tuple[str, str]] = field(default_factory=set)
    duplicated: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for o in self.outcomes if o.kind == kind)

    def latencies(self, kind: str) -> list[float]:
        return sorted(o.latency_ms for o in self.outcomes if o.kind == kind)

    def claim(self, sent_id: str, answered_id: str | None, tier: str, completion_id: str | None) -> bool:
        """Record an answer's ids; False when it belongs to another request or repeats one."""
        if answered_id != sent_id or answered_id in self.seen_request_ids:
            self.duplicated += 1
            return False
        self.seen_request_ids.add(answered_id)
        if completion_id is not None:
            if (tier, completion_id) in self.seen_completion_ids:
                self.duplicated += 1
                return False
            self.seen_completion_ids.add((tier, completion_id))
        return True


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100.0 * len(ordered))))
    return ordered[rank - 1]


def _stream_answer(raw: bytes, reply_tokens: int) -> tuple[str | None, bool]:
    """(completion id, whole?) of an SSE answer: every token present, then `[DONE]`."""
    payloads = [line[5:].strip() for line in raw.split(b"\n") if line.startswith(b"data:")]
    if not payloads or payloads[-1] != b"[DONE]":
        return None, False
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    tokens = sum(1 for c in chunks for ch in c.get("choices", []) if ch.get("delta", {}).get("content"))
    ids = {c.get("id") for c in chunks}
    return (ids.pop() if len(ids) == 1 else None), tokens == reply_tokens


async def one_request(
    session: aiohttp.ClientSession, url: str, i: int, fleet: Fleet, tally: Tally, timeout_s: float
) -> None:
    rid = f"load-{i:08d}"
    tier = TIERS[i % len(TIERS)]
    stream = i % 4 == 3
    body = {
        "model": tier,
        "max_tokens": fleet.reply_tokens,
        "stream": stream,
        "messages": [{"role": "user", "content": PROMPT.format(rid=rid)}],
    }
    t0 = time.perf_counter()
    try:
        async with session.post(
            url,
            data=orjson.dumps(body),
            headers={"content-type": "application/json", "x-request-id": rid},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            raw = await resp.read()
            status, headers = resp.status, resp.headers
    except (TimeoutError, aiohttp.ClientError) as err:
        tally.outcomes.append(Outcome("lost", (time.perf_counter() - t0) * 1e3, type(err).__name__))
        return
    ms = (time.perf_counter() - t0) * 1e3
    if status in (429, 503) and headers.get("retry-after"):
        own = headers.get("x-tiergate-overhead-ms")
        tally.outcomes.append(Outcome("rejected", ms, gateway_ms=None if own is None else float(own)))
        return
    if status != 200:
        tally.outcomes.append(Outcome("error", ms, f"HTTP {status}: {raw[:120]!r}"))
        return
    if stream:
        completion_id, whole = _stream_answer(raw, fleet.reply_tokens)
    else:
        data = orjson.loads(raw)
        completion_id = data.get("id")
        whole = data.get("usage", {}).get("completion_tokens") == fleet.reply_tokens and data.get("model") == tier
    if not tally.claim(rid, headers.get("x-tiergate-request-id"), tier, completion_id):
        return
    tally.outcomes.append(Outcome("accepted" if whole else "error", ms, "" if whole else "incomplete answer"))


async def offer_load(url: str, rate_rps: float, seconds: float, fleet: Fleet, start_index: int = 0) -> Tally:
    """Send `rate_rps` x `seconds` requests on a fixed schedule, then wait for every answer."""
    tally = Tally()
    n = round(rate_rps * seconds)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        t0 = time.perf_counter()
        for k in range(n):
            delay = t0 + k / rate_rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one_request(session, url, start_index + k, fleet, tally, 30.0)))
        await asyncio.gather(*tasks)
    return tally


async def upstream_floor(url: str, fleet: Fleet, n: int = 30) -> list[float]:
    """The fake tier's own time per request, asked directly one at a time (the floor)."""
    body = orjson.dumps(
        {"model": "fake", "max_tokens": fleet.reply_tokens, "messages": [{"role": "user", "content": "x"}]}
    )
    out = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers={"content-type": "application/json"}) as resp:
                await resp.read()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def write_fleet_profile(path: Path, endpoints: dict[str, str], fleet: Fleet) -> None:
    """The test-fake profile over these fakes, each tier's KV budget holding exactly `slots` requests."""
    data = write_profile(
        path,
        "test-fake",
        endpoints=endpoints,
        gateway={"admission_max_queue": 8, "admission_queue_timeout_s": 5.0, "access_log": False},
    )
    # What admission reserves for one request: the gateway's own prompt estimate (one message, far
    # from any context limit, so no tokenizer count) plus max_tokens.
    cost = PromptSize(PROMPT.format(rid="load-00000000"), messages=1).estimate + fleet.reply_tokens
    for tier in data["tiers"]:
        tier["kv_capacity_tokens"] = fleet.slots * cost + cost - 1
    path.write_text(yaml.safe_dump(data))


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k.ljust(width)} | {v} |" for k, v in [("measure", "value"), ("-" * width, "---"), *rows])


def report(
    tally: Tally, warm: Tally, fleet: Fleet, args: argparse.Namespace, floor: list[float], rss: tuple[float, float]
) -> str:
    offered = len(tally.outcomes) + tally.duplicated
    accepted = tally.latencies("accepted")
    rejected = tally.latencies("rejected")
    floor_p50 = statistics.median(floor)
    rej_p99 = percentile(rejected, 99)
    inside = [o.gateway_ms for o in tally.outcomes if o.kind == "rejected" and o.gateway_ms is not None]
    verdict = "met" if rej_p99 < REJECTED_P99_TARGET_MS else "missed"
    goodput = len(accepted) / args.seconds
    start, end = rss
    rows = [
        ("fleet capacity (3 tiers x slots / request time)", f"{fleet.capacity_rps:.0f} req/s"),
        ("offered", f"{offered} in {args.seconds:g} s ({offered / args.seconds:.0f} req/s, {args.load:g}x capacity)"),
        ("accepted", f"{len(accepted)} ({goodput:.0f} req/s, {goodput / fleet.capacity_rps:.2f} of capacity)"),
        ("rejected (503/429 + Retry-After)", str(len(rejected))),
        ("errors", str(tally.count("error"))),
        ("lost (no answer)", str(tally.count("lost"))),
        ("duplicated (answer for another request)", str(tally.duplicated)),
        (
            "rejection latency p50 / p99",
            f"{percentile(rejected, 50):.2f} / {rej_p99:.2f} ms (target < {REJECTED_P99_TARGET_MS:g} ms: {verdict})",
        ),
        ("  of which inside the gateway, p50 / p99", f"{percentile(inside, 50):.2f} / {percentile(inside, 99):.2f} ms"),
        ("accepted latency p50 / p99", f"{percentile(accepted, 50):.1f} / {percentile(accepted, 99):.1f} ms"),
        (
            "fake tier alone p50 (floor, same run)",
            f"{floor_p50:.1f} ms; accepted p50 / floor = {percentile(accepted, 50) / floor_p50:.2f}",
        ),
        (
            "gateway RSS after warm-up -> end",
            f"{start:.1f} -> {end:.1f} MiB ({end - start:+.1f} MiB, {100 * (end - start) / start:+.1f}%)",
        ),
        (
            "warm-up (not counted)",
            f"{len(warm.outcomes)} requests, {warm.count('lost')} lost, {warm.count('error')} errors",
        ),
    ]
    errors = Counter(o.detail for o in tally.outcomes if o.kind in ("error", "lost"))
    lines = [table(rows)]
    if errors:
        lines.append("\nerrors and lost, by cause:\n" + "\n".join(f"  {n} x {d}" for d, n in errors.most_common(8)))
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    fleet = Fleet(args.ttft_ms, args.token_delay_ms, args.reply_tokens, args.slots)
    fake_args = (
        *("--ttft-ms", str(fleet.ttft_ms)),
        *("--token-delay-ms", str(fleet.token_delay_ms)),
        *("--reply-tokens", str(fleet.reply_tokens)),
    )
    with ExitStack() as stack:
        fakes = {t: stack.enter_context(fake_upstream(*fake_args)) for t in TIERS}
        path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tiergate-load-"))) / "profile.yaml"
        write_fleet_profile(path, fakes, fleet)
        port = free_port()
        cmd = tiergate_cmd("serve", "--profile", str(path), "--port", str(port), "--log-level", "warning")
        proc: Proc = stack.enter_context(running(cmd, f"http://127.0.0.1:{port}/healthz"))
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        floor = await upstream_floor(fakes["small"] + "/chat/completions", fleet)
        print(
            f"fleet: {fleet.capacity_rps:.0f} req/s capacity; offering {args.load:g}x for {args.seconds:g} s ...",
            flush=True,
        )
        warm = await offer_load(url, fleet.capacity_rps / 2, min(3.0, args.seconds), fleet, start_index=10_000_000)
        gc.collect()
        start_rss = rss_mib(proc.popen.pid)
        tally = await offer_load(url, args.load * fleet.capacity_rps, args.seconds, fleet)
        await asyncio.sleep(1.0)
        end_rss = rss_mib(proc.popen.pid)
    text = report(tally, warm, fleet, args, floor, (start_rss, end_rss))
    print(text)
    if args.out is not None:
        header = (
            f"# Load benchmark\n\nMeasured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} CPUs,"
            f" Python {platform.python_version()}: `python -m tests.bench.load --seconds {args.seconds:g}"
            f" --load {args.load:g}`. Fake tiers: {fleet.ttft_ms:g} ms to the first token, {fleet.reply_tokens}"
            f" tokens {fleet.token_delay_ms:g} ms apart, {fleet.slots} requests at once per tier; one gateway"
            " worker; a quarter of the requests streamed.\n\n"
        )
        args.out.write_text(header + text + "\n")
    failed = tally.count("lost") + tally.duplicated + tally.count("error")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0, help="how long the load is offered")
    parser.add_argument("--load", type=float, default=2.0, help="offered rate as a multiple of the fleet's capacity")
    parser.add_argument("--slots", type=int, default=4, help="requests each fake tier admits at once")
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--token-delay-ms", type=float, default=5.0)
    parser.add_argument("--reply-tokens", type=int, default=16)
    parser.add_argument(
        "--out", type=Path, default=None, help=f"also write the table here (e.g. {REPO / 'docs/benchmarks/load.md'})"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
