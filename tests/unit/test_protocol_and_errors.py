from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import (
    AuthenticationFailed,
    HTTPError,
    InvalidRequest,
    Overloaded,
    UpstreamFailed,
    UpstreamRejected,
    UpstreamTimeout,
    render,
)
from gateway.protocol import ParsedRequest, parse_chat_request
from gateway.upstream import upstream_error


def _parse(body: dict[str, Any]) -> ParsedRequest:
    return parse_chat_request(orjson.dumps(body))


def test_upstream_body_rewrites_only_the_model_and_keeps_unknown_fields() -> None:
    parsed = _parse({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "x_custom": {"a": 1}})
    assert parsed.unknown_fields == ["x_custom"]
    out = orjson.loads(parsed.upstream_body("upstream-m", force_usage=True))
    assert out == {
        "model": "upstream-m",
        "messages": [{"role": "user", "content": "hi"}],
        "x_custom": {"a": 1},
    }


def test_streams_ask_the_tier_for_usage_while_keeping_other_stream_options() -> None:
    parsed = _parse(
        {
            "model": "a",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"continuous_usage_stats": False},
        }
    )
    out = orjson.loads(parsed.upstream_body("m", force_usage=True))
    assert out["stream_options"] == {"continuous_usage_stats": False, "include_usage": True}


def test_routing_text_reads_string_and_part_contents() -> None:
    parsed = _parse(
        {
            "model": "a",
            "messages": [
                {"role": "system", "content": "sys"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "part"}, {"type": "image_url", "image_url": {}}],
                },
                {"role": "assistant", "content": None, "tool_calls": []},
            ],
        }
    )
    assert parsed.routing_text() == "sys\npart"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "a", "messages": [{"role": "user"}]}, "messages[0]"),
        ({"model": "a", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"model": "a", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}, "top_logprobs"),
        ({"model": "a", "messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 5}, "stop"),
        ({"model": "a", "messages": [{"role": "user", "content": "x"}], "stream_options": {}}, "stream_options"),
        ({"model": "a", "messages": [{"role": "tool"}]}, "messages[0]"),
    ],
)
def test_validation_errors_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        _parse(body)
    assert info.value.param == param


def test_a_union_field_reports_the_rule_it_broke_not_the_first_type_it_tried() -> None:
    with pytest.raises(InvalidRequest) as info:
        _parse({"model": "a", "messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 5})
    assert "at most 4" in info.value.message


def test_whole_floats_are_integers_as_in_json_and_strings_never_are() -> None:
    hello = {"model": "a", "messages": [{"role": "user", "content": "x"}]}
    assert _parse({**hello, "max_tokens": 16.0, "n": 2.0}).checked.n == 2
    for bad in (2.5, "2", True):
        with pytest.raises(InvalidRequest) as info:
            _parse({**hello, "n": bad})
        assert info.value.param == "n"


def test_rendered_errors_have_openai_shape_and_headers() -> None:
    resp = render(Overloaded("slow down", retry_after_s=3))
    assert resp.status_code == 503 and resp.headers["retry-after"] == "3"
    body = orjson.loads(resp.body)
    assert body == {
        "error": {
            "message": "slow down",
            "type": "overloaded_error",
            "param": None,
            "code": "overloaded",
        }
    }
    assert render(AuthenticationFailed()).headers["www-authenticate"].startswith("Bearer")


def test_messages_are_bounded() -> None:
    assert len(HTTPError("x" * 5000).message) < 600


def test_only_tier_faults_count_against_a_tier() -> None:
    assert UpstreamFailed("x").counts_as_tier_failure and UpstreamTimeout("x").counts_as_tier_failure
    for err in (InvalidRequest("x"), UpstreamRejected(400, "x"), Overloaded("x"), AuthenticationFailed()):
        assert not err.counts_as_tier_failure


@pytest.mark.parametrize(
    ("status", "kind", "out_status"),
    [
        (400, UpstreamRejected, 400),
        (422, UpstreamRejected, 422),
        (404, UpstreamFailed, 502),
        (429, UpstreamFailed, 502),
        (500, UpstreamFailed, 502),
        (503, UpstreamFailed, 502),
    ],
)
def test_tier_statuses_map_to_the_gateway_tree(status: int, kind: type, out_status: int) -> None:
    err = upstream_error(status, b'{"error": {"message": "boom", "param": "max_tokens", "code": 7}}')
    assert isinstance(err, kind) and err.status_code == out_status and "boom" in err.message


def test_non_json_tier_errors_still_map() -> None:
    assert upstream_error(502, b"<html>bad gateway</html>").status_code == 502
