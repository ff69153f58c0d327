"""Prompt and answer features: fixed shape, finite, and never an exception on odd input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.runtime.answer_features import (
    ANSWER_FEATURE_NAMES,
    VERIFIER_FEATURE_NAMES,
    answer_features,
    extract_letter,
    final_answer,
    verifier_features,
)
from router.runtime.prompt_features import FEATURE_NAMES, last_block, prompt_features

ODD_TEXTS = [
    "",
    " ",
    "\n\n\n",
    "日本語の質問です。答えは何ですか？",
    "def f(x):\n    return {x: [1, 2]};\n" * 50,
    "A" * 200_000,
    "\x00\x01\ufffd",
]


def test_prompt_features_have_one_finite_value_per_name_on_odd_input() -> None:
    for text in ODD_TEXTS:
        vec = prompt_features(text)
        assert len(vec) == len(FEATURE_NAMES)
        assert all(math.isfinite(v) for v in vec)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=3000))
def test_prompt_features_never_raise_and_stay_finite(text: str) -> None:
    vec = prompt_features(text)
    assert len(vec) == len(FEATURE_NAMES)
    assert all(math.isfinite(v) for v in vec)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2000), st.lists(st.text(max_size=300), max_size=3), st.none() | st.lists(st.floats()))
def test_verifier_features_never_raise_on_any_answer_or_logprobs(
    answer: str, previous: list[str], logprobs: list[float] | None
) -> None:
    vec = verifier_features("Question?\nA) x\nB) y\nAnswer:", answer, 1, previous, logprobs)
    assert len(vec) == len(VERIFIER_FEATURE_NAMES)
    assert all(math.isfinite(v) for v in vec)


def test_last_block_is_the_question_after_the_few_shot_examples() -> None:
    prompt = "Q1?\nA) a\nB) b\nAnswer:\nA\n\nQ2 is about magnets and iron doors?\nA) yes\nB) no\nAnswer:"
    assert last_block(prompt).startswith("Q2 is about magnets")


def test_multiple_choice_and_code_prompts_are_told_apart() -> None:
    names = list(FEATURE_NAMES)
    mc = dict(zip(names, prompt_features("Which?\nA) one\nB) two\nC) three\nD) four\nAnswer:"), strict=True))
    code = dict(zip(names, prompt_features("Write a function to reverse a string."), strict=True))
    assert mc["options"] == 4
    assert mc["mc"] == 1.0
    assert mc["code_ask"] == 0.0
    assert code["code_ask"] == 1.0
    assert code["mc"] == 0.0


def test_letters_are_extracted_from_bare_and_stated_answers() -> None:
    assert extract_letter("C\n") == "C"
    assert extract_letter("The answer is (B) because ...") == "B"
    assert extract_letter("I think this is a hard one") is None


def test_agreement_compares_final_answers_not_raw_text() -> None:
    names = list(ANSWER_FEATURE_NAMES)
    same = dict(zip(names, answer_features("B", ["B\n"]), strict=True))
    other = dict(zip(names, answer_features("B", ["A\n"]), strict=True))
    assert same["agree_prev"] == 1.0
    assert same["disagree_prev"] == 0.0
    assert other["agree_prev"] == 0.0
    assert other["disagree_prev"] == 1.0
    assert final_answer("work...\n#### 1,250") == final_answer("so the total is 1250")


def test_cached_features_are_not_read_back_by_other_feature_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from router.offline.feature_store import load_memo, save_memo
    from router.offline.fit import FeatureMemo
    from router.runtime import answer_features as module

    save_memo(FeatureMemo({"row": [1.0]}, {"row|a||1": [2.0]}), tmp_path)
    assert load_memo(tmp_path).answer == {"row|a||1": [2.0]}
    changed = tmp_path / "answer_features.py"
    changed.write_bytes(Path(str(module.__file__)).read_bytes() + b"\n# another extraction rule\n")
    monkeypatch.setattr(module, "__file__", str(changed))
    assert load_memo(tmp_path).answer == {}
