"""A real byte-level BPE tokenizer.json, trained in a moment on a few sentences, for tests.

The gateway loads it exactly as it loads a model's tokenizer.json; its counts differ from the
bytes/4 estimate, which is what the tests need to tell the two apart.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

CORPUS = [
    "The capital of France is Paris. It lies on the Seine.",
    "Write a Python function that returns the sum of two numbers.",
    "Explain why the sky is blue, step by step, in plain words.",
]


def write_tokenizer(folder: Path) -> Path:
    """Train and save a small byte-level BPE; returns the tokenizer.json path."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.json"
    tok.save(str(path))
    return path


def count(path: Path, text: str) -> int:
    """Tokens of `text` under the tokenizer at `path`, without special tokens (as the gateway counts)."""
    return len(Tokenizer.from_file(str(path)).encode(text, add_special_tokens=False).ids)
