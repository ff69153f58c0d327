from __future__ import annotations

from deployments.profile import load_profile
from gateway.app import create_app
from gateway.settings import GatewaySettings


def test_openapi_describes_the_chat_route_with_its_request_schema() -> None:
    schema = create_app(GatewaySettings(profile=load_profile("test-fake", apply_env=False))).openapi()
    op = schema["paths"]["/v1/chat/completions"]["post"]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert {"model", "messages", "stream", "max_tokens"} <= set(body["properties"])
    assert {"400", "401", "404", "413", "502", "503", "504"} <= set(op["responses"])
    assert "/v1/models" in schema["paths"] and "/metrics" in schema["paths"]
