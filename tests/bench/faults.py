"""Fault benchmark: a tier dies under load, then comes back; nothing the callers sent may be lost.

Three fake tiers (`tiergate fake-upstream`, one process each) behind one tiergate worker. Concurrent
callers send `model: "auto"` requests, half of them streamed, each with its own prompt, for the whole
run. The small tier, where these requests start, goes through two faults:

1. a quarter of the way in its process is killed (SIGKILL: open connections reset, new ones
   refused): retries, then fallback to medium, until the health probe marks it down;
2. half way in it is started again on its port but answers every chat request with a 503 while its
   health probe passes: only the circuit breaker can keep requests away from it. Three quarters of
   the way in it answers again, and the next half-open probe closes the breaker.

The run prints:

- ok: complete answers (a JSON completion, or a stream ending in [DONE] with no error event);
- errors: answers in OpenAI's error shape (a 5xx, or a stream that ended with an error event and
  [DONE] because its tier died mid-answer: no other tier may take over once bytes went out);
- lost: requests that got neither (a reset, a hang past the client's timeout, a malformed answer).
  It must be 0; the run exits non-zero otherwise;
- retries, fallbacks and breaker transitions, from the gateway's own /metrics.

    python -m tests.bench.faults [--duration-s 30] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import orjson

from tests.procs import Proc, free_port, gateway, running, tiergate_cmd, write_profile

FAKE_ARGS = ("--token-delay-ms", "2", "--reply-tokens", "16")
RESILIENCE = {"breaker_min_calls": 10, "breaker_open_s": 1.0, "breaker_window_s": 5.0}


def _fake(port: int) -> tuple[list[str], str]:
    return tiergate_cmd("fake-upstream", "--port", str(port), *FAKE_ARGS), f"http://127.0.0.1:{port}/health"


def _outcome(status: int, body: bytes, stream: bool) -> str:
    """'ok', 'error' (OpenAI-shaped), or 'lost' (anything a client could not make sense of)."""
    if status != 200:
        try:
            return "error" if "error" in orjson.loads(body) else "lost"
        except orjson.JSONDecodeError:
            return "lost"
    if not stream:
        try:
            return "ok" if orjson.loads(body).get("choices") else "lost"
        except orjson.JSONDecodeError:
            return "lost"
    events = [line[5:].strip() for line in body.split(b"\n") if line.startswith(b"data:")]
    if not events or events[-1] != b"[DONE]":
        return "lost"
    return "error" if any(e.startswith(b'{"error"') for e in events) else "ok"


async def _caller(
    session: aiohttp.ClientSession, url: str, worker: int, stop_at: float, seen: Counter[str], tiers: Counter[str]
) -> None:
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        stream = n % 2 == 0
        body = {"model": "auto", "messages": [{"role": "user", "content": f"Hello {worker}-{n}!"}], "stream": stream}
        headers = {"x-tiergate-latency-class": "batch"}
        try:
            async with session.post(url, data=orjson.dumps(body), headers=headers) as resp:
                raw = await resp.read()
                outcome = _outcome(resp.status, raw, stream)
                tiers[resp.headers.get("x-tiergate-tier", "none")] += outcome == "ok"
        except (aiohttp.ClientError, TimeoutError):
            outcome = "lost"
        seen[outcome] += 1
        seen["stream-" + outcome if stream else "plain-" + outcome] += 1


def _metric_sums(text: str, name: str, key: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            label = "->".join(labels[k] for k in key.split(",")) if "," in key else labels[key]
            out[label] = out.get(label, 0.0) + float(match.group(2))
    return out


async def _load(base: str, duration_s: float, concurrency: int, events: list[tuple[float, str]]) -> Counter[str]:
    seen: Counter[str] = Counter()
    tiers: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=30.0)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        stop_at = time.monotonic() + duration_s
        await asyncio.gather(
            *(_caller(session, base + "/chat/completions", w, stop_at, seen, tiers) for w in range(concurrency))
        )
    for tier, count in sorted(tiers.items()):
        events.append((0.0, f"answered by {tier}: {count}"))
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    with ExitStack() as stack:
        ports = {tier: free_port() for tier in ("small", "medium", "large")}
        procs: dict[str, Proc] = {}
        for tier, port in ports.items():
            cmd, ready = _fake(port)
            procs[tier] = stack.enter_context(running(cmd, ready))
        path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "profile.yaml"
        endpoints = {tier: f"http://127.0.0.1:{port}/v1" for tier, port in ports.items()}
        write_profile(path, "test-fake", endpoints=endpoints, gateway={"resilience": RESILIENCE, "access_log": False})
        base = stack.enter_context(gateway(path))
        root = base.removesuffix("/v1")

        notes: list[tuple[float, str]] = []

        async def faults() -> None:
            t0 = time.monotonic()
            quarter = args.duration_s / 4
            small = f"http://127.0.0.1:{ports['small']}/fake/faults"
            await asyncio.sleep(quarter)
            procs["small"].popen.kill()
            procs["small"].popen.wait()
            notes.append((time.monotonic() - t0, "small tier killed (SIGKILL)"))
            await asyncio.sleep(t0 + 2 * quarter - time.monotonic())
            cmd, ready = _fake(ports["small"])
            # Started again on its port; the ExitStack stops it at the end of the run.
            await asyncio.to_thread(lambda: stack.enter_context(running(cmd, ready)))
            await _post(small, {"fail_next": 10**9, "status": 503})
            notes.append((time.monotonic() - t0, "small tier back, but answering 503 to every chat request"))
            await asyncio.sleep(t0 + 3 * quarter - time.monotonic())
            await _post(small, {})
            notes.append((time.monotonic() - t0, "small tier answering again"))

        async def run() -> Counter[str]:
            fault_task = asyncio.create_task(faults())
            seen = await _load(base, args.duration_s, args.concurrency, notes)
            await fault_task
            return seen

        t = time.monotonic()
        seen = asyncio.run(run())
        wall = time.monotonic() - t
        metrics = asyncio.run(_get(root + "/metrics"))

    total = seen["ok"] + seen["error"] + seen["lost"]
    retries = _metric_sums(metrics, "tiergate_retries_total", "tier,reason")
    fallbacks = _metric_sums(metrics, "tiergate_fallbacks_total", "from_tier,to_tier")
    transitions = _metric_sums(metrics, "tiergate_breaker_transitions_total", "tier,state")
    print(f"fault run: {args.concurrency} callers for {wall:.1f} s, model=auto, half streamed")
    for at, what in notes:
        print(f"  {'' if at == 0.0 else f't={at:5.1f} s  '}{what}")
    print(f"requests        {total}")
    print(f"ok              {seen['ok']}  (plain {seen['plain-ok']}, streamed {seen['stream-ok']})")
    print(f"errors          {seen['error']}  (plain {seen['plain-error']}, streamed {seen['stream-error']})")
    print(f"lost            {seen['lost']}  (must be 0)")
    print(f"retries         {int(sum(retries.values()))}  {dict(sorted(retries.items()))}")
    print(f"fallbacks       {int(sum(fallbacks.values()))}  {dict(sorted(fallbacks.items()))}")
    print(f"breaker changes {int(sum(transitions.values()))}  {dict(sorted(transitions.items()))}")
    return 1 if seen["lost"] else 0


async def _post(url: str, body: dict[str, int]) -> None:
    async with aiohttp.ClientSession() as session, session.post(url, data=orjson.dumps(body)) as resp:
        resp.raise_for_status()


async def _get(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.text()


if __name__ == "__main__":
    sys.exit(main())
