"""Property tests on everything the gateway parses from a caller or a tier: whatever arrives, the
answer is a value or a 400 that names the field at fault, never an unexpected exception."""

from __future__ import annotations

import asyncio
from typing import Any, cast
from urllib.parse import unquote

import aiohttp
import orjson
import pytest
from aiohttp.base_protocol import BaseProtocol
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from deployments.profile import LATENCY_CLASSES, load_profile, with_env_overrides
from gateway.app import create_app
from gateway.budgets import SLO_TOTAL_HEADER, SLO_TTFT_HEADER, request_budget
from gateway.context import PASSED_THROUGH_MAX_NAMES, passed_through_header
from gateway.errors import InvalidRequest
from gateway.protocol import KNOWN_FIELDS, parse_chat_request
from gateway.routing import LATENCY_HEADER
from gateway.settings import GatewaySettings
from gateway.upstream import UpstreamStream

VALID: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Header values as HTTP carries them: visible ASCII and spaces, no line breaks.
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=24)


def _outcome(raw: bytes) -> InvalidRequest | None:
    """None when the body parsed; the InvalidRequest when refused. Anything else propagates (a bug)."""
    try:
        parse_chat_request(raw)
    except InvalidRequest as err:
        refused = err
    else:
        return None
    assert refused.status_code == 400
    return refused


@given(st.binary(max_size=256))
def test_any_bytes_parse_or_are_a_400(raw: bytes) -> None:
    _outcome(raw)


@given(json_values)
def test_any_json_parses_or_is_a_400_and_an_object_names_its_field(value: Any) -> None:
    err = _outcome(orjson.dumps(value))
    if err is not None and isinstance(value, dict):
        assert err.param, err.message
    if not isinstance(value, dict):
        assert err is not None and err.code == "invalid_json"


@given(st.sampled_from(sorted(KNOWN_FIELDS)), json_values)
def test_a_bad_value_in_a_known_field_is_a_400_naming_that_field(field: str, value: Any) -> None:
    err = _outcome(orjson.dumps({**VALID, field: value}))
    if err is not None:
        assert err.param is not None and err.param.startswith(field), (field, err.param, err.message)


@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_unknown_fields_are_passed_through_whatever_they_hold(extra: dict[str, Any]) -> None:
    extra = {k: v for k, v in extra.items() if k not in KNOWN_FIELDS}
    parsed = parse_chat_request(orjson.dumps({**VALID, **extra}))
    assert parsed.unknown_fields == sorted(extra)


@given(st.dictionaries(st.sampled_from([SLO_TTFT_HEADER, SLO_TOTAL_HEADER]), header_values, max_size=2))
def test_budget_headers_are_a_budget_or_a_400_naming_the_header(headers: dict[str, str]) -> None:
    routing = load_profile("test-fake", apply_env=False).routing
    for latency_class in LATENCY_CLASSES:
        try:
            budget = request_budget(headers, latency_class, routing, sent_whole=False)
        except InvalidRequest as err:
            refused: InvalidRequest | None = err
        else:
            refused = None
            for value in (budget.ttft_ms, budget.total_ms):
                assert value is None or value > 0
        if refused is not None:
            assert refused.status_code == 400 and refused.param in headers


@given(st.lists(st.text(max_size=80), max_size=40))
def test_the_passed_through_header_is_plain_bounded_ascii_whatever_the_field_names(names: list[str]) -> None:
    value = passed_through_header(names).decode("ascii")
    assert all(32 <= ord(c) < 127 for c in value)
    shown = value.split(",") if value else []
    assert len(shown) <= PASSED_THROUGH_MAX_NAMES + 1
    for name, seen in zip(names[:PASSED_THROUGH_MAX_NAMES], shown, strict=False):
        assert unquote(seen) == name[:48]


ADMIN_KEY = "adm-properties-0123456789"


@pytest.fixture(scope="module")
def preview() -> TestClient:
    """The route preview runs the request's header parsing and routing without calling a tier."""
    profile = with_env_overrides(load_profile("test-fake", apply_env=False), {"TIERGATE_ADMIN_KEY": ADMIN_KEY})
    return TestClient(create_app(GatewaySettings(profile=profile)))


@settings(max_examples=60)
@given(st.dictionaries(st.sampled_from([LATENCY_HEADER, SLO_TTFT_HEADER, SLO_TOTAL_HEADER]), header_values))
def test_routing_headers_route_or_are_a_400_naming_the_header(preview: TestClient, headers: dict[str, str]) -> None:
    resp = preview.post("/admin/route-preview", json=VALID, headers={**headers, "authorization": f"Bearer {ADMIN_KEY}"})
    assert resp.status_code in (200, 400), resp.text
    if resp.status_code == 400:
        assert resp.json()["error"]["param"] in headers


# --- The tier's side: SSE lines split however the network delivered them.

sse_lines = st.one_of(
    json_values.map(lambda v: b"data: " + orjson.dumps(v)),
    st.just(b"data: [DONE]"),
    st.sampled_from([b"", b": keep-alive", b"event: message", b"id: 7", b"retry: 100"]),
)


def _payloads(text: bytes) -> list[bytes]:
    """What a reader of the whole stream at once finds: the payload of every `data:` line."""
    return [line[5:].strip() for line in text.split(b"\n") if line.startswith(b"data:")]


async def _read(chunks: list[bytes]) -> list[bytes]:
    reader = aiohttp.StreamReader(BaseProtocol(asyncio.get_running_loop()), 2**16)
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    resp = cast(aiohttp.ClientResponse, type("Response", (), {"content": reader})())
    out: list[bytes] = []
    async for batch in UpstreamStream(resp).batches():
        assert batch, "a batch is never empty"
        out.extend(batch)
    return out


@given(st.lists(sse_lines, max_size=12), st.booleans(), st.data())
def test_sse_payloads_are_the_same_however_the_stream_is_cut(
    lines: list[bytes], crlf: bool, data: st.DataObject
) -> None:
    text = (b"\r\n" if crlf else b"\n").join(lines) + b"\n"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True) if b > a]
    assert asyncio.run(_read(chunks)) == _payloads(text)


@given(st.lists(st.binary(max_size=64), max_size=6))
def test_any_bytes_from_a_tier_are_read_without_error(chunks: list[bytes]) -> None:
    assert asyncio.run(_read([c for c in chunks if c])) == _payloads(b"".join(chunks))
