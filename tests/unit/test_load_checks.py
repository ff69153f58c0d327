"""The load benchmark's answer checks: they must catch a lost, misrouted or repeated answer."""

from __future__ import annotations

import orjson

from tests.bench.load import Tally, _stream_answer, percentile


def _sse(*chunks: dict[str, object], done: bool = True) -> bytes:
    lines = [b"data: " + orjson.dumps(c) for c in chunks] + ([b"data: [DONE]"] if done else [])
    return b"\n\n".join(lines) + b"\n\n"


def test_an_answer_carrying_another_requests_id_or_a_repeated_id_is_a_duplicate() -> None:
    tally = Tally()
    assert tally.claim("load-1", "load-1", "small", "c1")
    assert not tally.claim("load-2", "load-1", "small", "c2")  # answered with another request's id
    assert not tally.claim("load-3", "load-3", "small", "c1")  # the same completion twice
    assert tally.claim("load-4", "load-4", "medium", "c1")  # another tier numbers its own answers
    assert tally.duplicated == 2


def test_a_stream_is_whole_only_with_every_token_and_done() -> None:
    token: dict[str, object] = {"id": "c1", "choices": [{"delta": {"content": "x"}}]}
    assert _stream_answer(_sse(token, token), 2) == ("c1", True)
    assert _stream_answer(_sse(token), 2) == ("c1", False)
    assert _stream_answer(_sse(token, token, done=False), 2) == (None, False)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
