from __future__ import annotations

from deployments.profile import load_profile
from gateway.app import create_app
from gateway.errors import UpstreamTimeout, error_body
from gateway.protocol import ErrorResponse
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
    assert ok["text/event-stream"]["schema"]["$ref"].endswith("/ChatCompletionChunk")
    for status in ("400", "401", "404", "413", "500", "502", "503", "504"):
        assert op["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert set(components["ErrorDetail"]["properties"]) == {"message", "type", "param", "code"}


def test_the_rendered_error_body_is_the_documented_error_model() -> None:
    body = error_body(UpstreamTimeout("The tier did not answer within 1 s."))
    parsed = ErrorResponse.model_validate_json(body)
    assert parsed.error.type == "timeout_error" and parsed.error.code == "upstream_timeout"
