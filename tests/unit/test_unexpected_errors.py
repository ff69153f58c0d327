from __future__ import annotations

from fastapi.testclient import TestClient

from deployments.profile import load_profile
from gateway.app import create_app
from gateway.settings import GatewaySettings
from router.runtime.policy import RoutingRequest


class BrokenScorer:
    version = "broken-1"

    def scores(self, request: RoutingRequest, n_rungs: int) -> list[float]:
        raise RuntimeError("/secret/path/model.bin exploded")


def test_an_unexpected_fault_is_an_openai_shaped_500_without_internals() -> None:
    app = create_app(GatewaySettings(profile=load_profile("test-fake", apply_env=False)), scorer=BrokenScorer())
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.post(
            "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "x"}]}
        )
    assert resp.status_code == 500
    body = resp.json()
    assert body["error"]["code"] == "internal_error"
    assert "/secret/path" not in resp.text
