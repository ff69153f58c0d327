"""A light pre-router head fitted on the operator's own traffic: the prompt's words, hashed.

The shipped scorer reads the shape of a prompt (task type, format, sizes) because that is what
transfers between benchmarks, and on one benchmark's traffic it ranks failures barely better than
chance. Within one operator's traffic the words themselves carry signal (on MMLU, the subject: a
Mixtral-class model is as good as the top rung on some and far behind on others), but only for
that traffic, so this head is fitted by `tiergate router calibrate` on the operator's sample
(`router.offline.lexical`), never at training time.

Features: lower-cased words and adjacent word pairs of the bounded prompt, hashed (CRC-32) into
`buckets` slots, counts damped to 1 + log(count), the vector scaled to unit length; the head is a
logistic regression over them. Hashing needs no vocabulary in the artifact, and a sparse dot product
over a 200-token prompt costs about a tenth of a millisecond.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from router.runtime.prompt_features import bounded_prompt

# 2**18 slots: on a few thousand prompts, collisions cost nothing measurable (docs/router.md).
DEFAULT_BUCKETS = 1 << 18
_WORD = re.compile(r"[^\W_]+")


def hashed_counts(text: str, buckets: int = DEFAULT_BUCKETS) -> dict[int, float]:
    """Slot -> damped, unit-length count of the prompt's words and word pairs."""
    words = _WORD.findall(bounded_prompt(text).lower())
    counts: dict[int, int] = {}
    previous = ""
    for word in words:
        for token in (word, f"{previous} {word}") if previous else (word,):
            slot = zlib.crc32(token.encode("utf-8", "replace")) % buckets
            counts[slot] = counts.get(slot, 0) + 1
        previous = word
    damped = {slot: 1.0 + math.log(n) for slot, n in counts.items()}
    norm = math.sqrt(sum(v * v for v in damped.values())) or 1.0
    return {slot: v / norm for slot, v in damped.items()}


def logistic(z: NDArray[np.float64]) -> NDArray[np.float64]:
    """1 / (1 + e^-z), with z bounded so a huge weight cannot overflow (live and offline alike)."""
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0))), dtype=np.float64)


@dataclass(frozen=True)
class LexicalHead:
    """P(this rung is not good enough | the prompt's hashed words), a logistic regression."""

    weights: NDArray[np.float64]
    intercept: float

    @property
    def buckets(self) -> int:
        return int(self.weights.shape[0])

    def proba(self, text: str) -> float:
        counts = hashed_counts(text, self.buckets)
        z = self.intercept + sum(self.weights[slot] * value for slot, value in counts.items())
        return float(logistic(np.asarray([z]))[0])

    def to_bundle(self) -> dict[str, Any]:
        """Plain data for the artifact (numpy array and float: no new type for the allow-list)."""
        return {"weights": np.asarray(self.weights, dtype=np.float64), "intercept": float(self.intercept)}

    @classmethod
    def from_bundle(cls, data: dict[str, Any]) -> LexicalHead:
        weights = np.asarray(data["weights"], dtype=np.float64)
        if weights.ndim != 1 or weights.shape[0] == 0:
            raise ValueError("a lexical head needs a one-dimensional weight vector")
        return cls(weights, float(data["intercept"]))
