from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.routing import Route

from deployments.profile import load_profile, with_env_overrides
from gateway.app import create_app
from gateway.errors import InvalidRequest, UpstreamTimeout, error_body
from gateway.middleware import ADMIN_PREFIX, OPEN_PATHS
from gateway.protocol import ErrorResponse, parse_chat_request
from gateway.settings import GatewaySettings


def test_openapi_describes_the_chat_route_with_its_request_schema() -> None:
    schema = create_app(GatewaySettings(profile=load_profile("test-fake", apply_env=False))).openapi()
    op = schema["paths"]["/v1/chat/completions"]["post"]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert {"model", "messages", "stream", "max_tokens"} <= set(body["properties"])
    assert {"400", "401", "404", "413", "502", "503", "504"} <= set(op["responses"])
    assert "/v1/models" in schema["paths"] and "/metrics" in schema["paths"]


def test_openapi_chat_bodies_come_from_the_protocol_models() -> None:
    schema = create_app(GatewaySettings(profile=load_profile("test-fake", apply_env=False))).openapi()
    op = schema["paths"]["/v1/chat/completions"]["post"]
    components = schema["components"]["schemas"]
    ok = op["responses"]["200"]["content"]
    assert ok["application/json"]["schema"]["$ref"].endswith("/ChatCompletion")
    event_data = ok["text/event-stream"]["schema"]["properties"]["data"]
    assert event_data["if"] == {"const": "[DONE]"}
    streamed = event_data["else"]["contentSchema"]["anyOf"]
    assert [r["$ref"].rsplit("/", 1)[-1] for r in streamed] == ["ChatCompletionChunk", "ErrorResponse"]
    for status in ("400", "401", "404", "413", "500", "502", "503", "504"):
        assert op["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert set(components["ErrorDetail"]["properties"]) == {"message", "type", "param", "code"}


def test_the_rendered_error_body_is_the_documented_error_model() -> None:
    body = error_body(UpstreamTimeout("The tier did not answer within 1 s."))
    parsed = ErrorResponse.model_validate_json(body)
    assert parsed.error.type == "timeout_error" and parsed.error.code == "upstream_timeout"


def _app(env: dict[str, str] | None = None) -> FastAPI:
    profile = with_env_overrides(load_profile("test-fake", apply_env=False), env or {})
    return create_app(GatewaySettings(profile=profile))


def _request_validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    document = Resource.from_contents(schema, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:tiergate", document)
    ref = {"$ref": "urn:tiergate#/components/schemas/ChatCompletionRequest"}
    return jsonschema.Draft202012Validator(ref, registry=registry)


def _schema_and_server_both(accepted: bool, body: dict[str, Any]) -> None:
    """The OpenAPI schema and the server's parser both accept `body`, or both refuse it."""
    assert _request_validator(_app().openapi()).is_valid(body) is accepted
    try:
        parse_chat_request(orjson.dumps(body))
        server_accepts = True
    except InvalidRequest:
        server_accepts = False
    assert server_accepts is accepted


def test_metrics_declares_the_content_type_it_answers() -> None:
    app = _app()
    declared = app.openapi()["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    answered = TestClient(app).get("/metrics").headers["content-type"]
    assert list(declared) == [answered]


@pytest.mark.parametrize(
    ("message", "accepted"),
    [
        ({"role": "tool", "tool_call_id": "c1"}, False),
        ({"role": "tool", "tool_call_id": "c1", "content": None}, False),
        ({"role": "user"}, False),
        ({"role": "tool", "tool_call_id": "c1", "content": "42"}, True),
        ({"role": "assistant", "content": None, "tool_calls": []}, True),
        ({"role": "assistant"}, True),
    ],
)
def test_schema_and_server_agree_on_which_messages_need_content(message: dict[str, Any], accepted: bool) -> None:
    body = {"model": "auto", "messages": [message]}
    _schema_and_server_both(accepted, body)


@pytest.mark.parametrize(
    ("extra", "accepted"),
    [
        ({"stream_options": {"include_usage": True}}, False),
        ({"stream": True, "stream_options": {"include_usage": True}}, True),
        ({"stream": False, "stream_options": None}, True),
        ({"top_logprobs": 2}, False),
        ({"top_logprobs": 0}, True),
        ({"logprobs": True, "top_logprobs": 2}, True),
        ({"stop": ["a", "b", "c", "d", "e"]}, False),
        ({"n": 2.0}, True),
        ({"n": 0}, False),
    ],
)
def test_schema_and_server_agree_on_rules_between_fields(extra: dict[str, Any], accepted: bool) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **extra}
    _schema_and_server_both(accepted, body)


def test_every_405_names_the_methods_the_path_serves() -> None:
    admin_key = "adm-test-0123456789abcdef"
    app = _app({"TIERGATE_ADMIN_KEY": admin_key})
    served: dict[str, set[str]] = {}
    for route in app.routes:
        assert isinstance(route, Route)
        served.setdefault(route.path, set()).update(route.methods or ())
    client = TestClient(app)
    for path, methods in served.items():
        for method in {"GET", "POST", "PUT", "DELETE", "PATCH"} - methods:
            resp = client.request(method, path, headers={"authorization": f"Bearer {admin_key}"})
            assert resp.status_code == 405, (method, path)
            assert set(resp.headers["allow"].split(", ")) == methods, (method, path)
            assert resp.json()["error"]["code"] == "method_not_allowed"


def test_the_schema_says_which_key_each_route_needs_as_the_middleware_enforces() -> None:
    keyed = _app({"TIERGATE_API_KEYS": "sk-test-0123456789"}).openapi()
    open_ = _app().openapi()
    for path, item in keyed["paths"].items():
        for op in item.values():
            want: list[dict[str, list[str]]] | None = [{"adminKey": []}] if path.startswith(ADMIN_PREFIX) else None
            if want is None and path not in OPEN_PATHS:
                want = [{"apiKey": []}]
            assert op.get("security") == want, path
            if want:
                assert "401" in op["responses"]
    assert all(
        "security" not in op or path.startswith(ADMIN_PREFIX)
        for path, item in open_["paths"].items()
        for op in item.values()
    )
