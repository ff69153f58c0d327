"""Router speed benchmark: artifact load time and scoring/verifying p50 (prints numbers; not a test).

Run: python -m tests.bench.router_speed [--model PATH]
Targets: load <= 1 s; scoring p50 <= 1 ms for a ~200-token prompt (also with a calibrated lexical
head), verifying p50 <= 5 ms for ~8k tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from router.runtime.artifact import load_model
from router.runtime.lexical import DEFAULT_BUCKETS, LexicalHead
from router.runtime.model import LearnedScorer
from router.runtime.policy import RoutingRequest
from router.runtime.verifier import Verifier

SENTENCE = "The boat travels northeast while the current flows north and the wind pushes its sails. "


def p50_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    start = time.perf_counter()
    model = load_model(args.model)
    load_s = time.perf_counter() - start
    scorer = LearnedScorer(model)
    verifier = Verifier(model)
    # ~4 characters per token: 200 tokens ~ 800 chars; 8k tokens ~ 32k chars.
    short = (SENTENCE * 10)[:800] + "\nA) west\nB) east\nC) north\nD) south\nAnswer:"
    # One paragraph, no few-shot breaks: the worst case, the whole question block is 32k characters.
    long = (SENTENCE * 400)[:32_000] + "\nWhich direction?\nA) west\nB) east\nAnswer:"
    print(f"model {model.version}: load {load_s:.3f} s")
    for name, text in (("200-token", short), ("8k-token", long)):
        request = RoutingRequest(text=text)
        p50 = p50_ms(partial(scorer.scores, request, 2), args.repeats)
        print(f"score  {name:>9} prompt: p50 {p50:.3f} ms")
    # A calibrated artifact may score a rung with a lexical head, per relative top-rung cost: the
    # same model with a random full-size head and a per-cost point costs what such an artifact does.
    head = LexicalHead(np.random.default_rng(0).normal(size=DEFAULT_BUCKETS), 0.0)
    point = dataclasses.replace(model.operating_point, start_mix=(), start_per_cost=True)
    lexical = LearnedScorer(
        dataclasses.replace(model, operating_point=point, lexical_heads=tuple(head for _ in model.scorers))
    )
    for name, text in (("200-token", short), ("8k-token", long)):
        p50 = p50_ms(partial(lexical.scores, RoutingRequest(text=text), 2), args.repeats)
        print(f"score  {name:>9} prompt, lexical head per cost: p50 {p50:.3f} ms")
    for name, text in (("200-token", short), ("8k-token", long)):
        p50 = p50_ms(partial(verifier.verify, text, "B\n", rung=1, previous_answers=["B"]), args.repeats)
        print(f"verify {name:>9} prompt: p50 {p50:.3f} ms")
    # Prose answers of 8k tokens on both tiers: the lexical similarity reads both whole (8k chars each).
    prose = (SENTENCE * 400)[:32_000]
    p50 = p50_ms(partial(verifier.verify, short, prose, rung=1, previous_answers=[prose[::-1]]), args.repeats)
    print(f"verify 8k-token prose answers: p50 {p50:.3f} ms")


if __name__ == "__main__":
    main()
