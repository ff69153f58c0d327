"""Prompt tokens: counted with the tier's tokenizer near a limit, estimated elsewhere, plus the template margin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployments.model import MARKER_NAME, stand_in_dir
from gateway.prompt_tokens import (
    ESTIMATE,
    TEMPLATE_TOKENS_FIXED,
    TEMPLATE_TOKENS_PER_MESSAGE,
    PromptSize,
    TokenCounter,
    load_counter,
    template_margin,
)
from router.runtime.prompt_features import estimate_tokens
from tests.tiny_tokenizer import count, write_tokenizer


class Spy(TokenCounter):
    """A real tokenizer's counter that also says how often it was asked."""

    def __init__(self, inner: TokenCounter) -> None:
        super().__init__(inner.key, inner.tokenizer)
        self.calls = 0

    def count(self, text: str) -> int:
        self.calls += 1
        return super().count(text)


def test_the_tokenizer_counts_what_the_file_says(tmp_path: Path) -> None:
    path = write_tokenizer(tmp_path)
    counter = load_counter(path)
    text = "The capital of France is Paris. zzqx 12345"
    assert counter.exact and counter.count(text) == count(path, text)
    assert counter.count(text) != estimate_tokens(text)  # the two really differ for this text


def test_exact_counts_add_the_template_margin_and_are_made_once_per_request(tmp_path: Path) -> None:
    spy = Spy(load_counter(write_tokenizer(tmp_path)))
    text = "Explain why the sky is blue."
    size = PromptSize(text, messages=2)
    assert size.tokens(spy, exact=True) == count(tmp_path / "tokenizer.json", text) + template_margin(2)
    size.tokens(spy, exact=True)
    assert spy.calls == 1


def test_far_from_a_limit_or_without_a_tokenizer_the_estimate_is_used(tmp_path: Path) -> None:
    spy = Spy(load_counter(write_tokenizer(tmp_path)))
    size = PromptSize("Hi there", messages=1)
    assert size.tokens(spy, exact=False) == estimate_tokens("Hi there") + template_margin(1)
    assert spy.calls == 0
    assert size.tokens(ESTIMATE, exact=True) == size.estimate


TEXTS = (
    "zzqx 12345 中文 ünïcödé " * 300,
    "The capital of France is Paris.\n\n   It lies on the Seine. " * 200,
    "def f(x):\n    return x + 1  # spaces   inside\n" * 300,
    "a" * 5_000,
)


def _stand_in_or_tiny(tmp_path: Path) -> Path:
    folder = stand_in_dir()
    return folder / "tokenizer.json" if (folder / MARKER_NAME).is_file() else write_tokenizer(tmp_path)


@pytest.mark.parametrize("text", TEXTS)
def test_counting_in_pieces_gives_the_count_of_one_encode(tmp_path: Path, text: str) -> None:
    path = _stand_in_or_tiny(tmp_path)
    assert len(text) > 4_000  # long enough to be cut into pieces
    assert load_counter(path).count(text) == count(path, text)


def test_the_high_guess_covers_english_prose_and_code(tmp_path: Path) -> None:
    counter = load_counter(_stand_in_or_tiny(tmp_path))
    for text in TEXTS[1:3]:
        size = PromptSize(text, messages=1)
        assert size.tokens(counter, exact=True) <= size.high


def test_the_margin_covers_the_stand_in_models_chat_template() -> None:
    """Render the stand-in's real template (as vLLM does) and count it: the margin must cover the extra."""
    folder = stand_in_dir()
    if not (folder / MARKER_NAME).is_file():
        pytest.skip("the stand-in model is not prepared (make setup prepares it)")
    import jinja2

    # A chat template renders text for a tokenizer, not HTML: no escaping, as vLLM renders it.
    env = jinja2.Environment(autoescape=False)  # noqa: S701
    template = env.from_string((folder / "chat_template.jinja").read_text())
    counter = load_counter(folder / "tokenizer.json")
    conversations = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
    ]
    for messages in conversations:
        rendered = template.render(messages=messages, add_generation_prompt=True)
        text = "\n".join(m["content"] for m in messages)
        overhead = counter.count(rendered) - counter.count(text)
        assert 0 < overhead <= template_margin(len(messages)), json.dumps(messages)
    assert (TEMPLATE_TOKENS_FIXED, TEMPLATE_TOKENS_PER_MESSAGE) == (48, 8)  # as documented
