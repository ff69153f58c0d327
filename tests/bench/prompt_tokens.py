"""Prompt-token counting cost per request: the tier's tokenizer against the bytes/4 estimate.

Run: python -m tests.bench.prompt_tokens [--repeats N]
Prints p50/p99 per prompt of about 200 and 8k tokens, for the stand-in model's tokenizer.json
(prepared by `tiergate model prepare`; a small trained byte-level BPE stands in when it is not),
the estimate, and the gateway's per-request plan far from a limit (the estimate, what most requests
pay) and near one (the tokenizer). Numbers, not a test: the gateway counts exactly only near a limit
because of what this prints.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

import orjson

from deployments.model import MARKER_NAME, stand_in_dir
from deployments.profile import TierSpec
from gateway.limits import TierLimits
from gateway.prompt_tokens import load_counter
from gateway.protocol import parse_chat_request
from router.runtime.prompt_features import estimate_tokens

SENTENCE = "The boat travels northeast while the current flows north and the wind pushes its sails. "


def _times_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """p50 and p99 of single calls, in ms; the first call (cold caches) is dropped."""
    runs = sorted(timeit.repeat(fn, number=1, repeat=repeats + 1)[1:])
    return statistics.median(runs) * 1e3, runs[min(len(runs) - 1, int(len(runs) * 0.99))] * 1e3


def _tokenizer() -> tuple[Path, str]:
    folder = stand_in_dir()
    if (folder / MARKER_NAME).is_file():
        return folder / "tokenizer.json", "stand-in (SmolLM2, 49k vocab)"
    from tests.tiny_tokenizer import write_tokenizer

    return write_tokenizer(Path(tempfile.mkdtemp()) / "tok"), "small trained BPE (stand-in not prepared)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    path, label = _tokenizer()
    start = time.perf_counter()
    counter = load_counter(path)
    print(f"tokenizer: {label}; load {time.perf_counter() - start:.3f} s")
    spec = TierSpec(name="t", endpoint="http://127.0.0.1:9/v1", upstream_model="t", tokenizer=str(path))
    limits = TierLimits.from_specs([spec.model_copy(update={"context_length_tokens": 32_768})])
    for target in (200, 8_000):
        text = SENTENCE
        while counter.count(text) < target:
            text += SENTENCE
        tokens = counter.count(text)
        exact_p50, exact_p99 = _times_ms(lambda t=text: counter.count(t), args.repeats)  # type: ignore[misc]
        est_p50, _ = _times_ms(lambda t=text: estimate_tokens(t), args.repeats)  # type: ignore[misc]
        print(
            f"{tokens:>6} tokens ({len(text):,} bytes; estimate {estimate_tokens(text)}):"
            f" tokenizer p50 {exact_p50:.3f} ms p99 {exact_p99:.3f} ms; estimate p50 {est_p50 * 1000:.2f} us;"
            f" ratio {exact_p50 / max(est_p50, 1e-6):,.0f}x"
        )
        for name, max_tokens in (("far from the limit", 16), ("near the limit (max_tokens 1e9)", 1_000_000_000)):
            body = orjson.dumps(
                {"model": "t", "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}
            )

            def plan(raw: bytes = body) -> object:
                # A fresh request each time: the count is remembered per request, not across them.
                return limits.plan("t", parse_chat_request(raw))

            p50, p99 = _times_ms(plan, args.repeats)
            print(f"         gateway plan, {name}: p50 {p50:.3f} ms p99 {p99:.3f} ms (parse included)")


if __name__ == "__main__":
    main()
