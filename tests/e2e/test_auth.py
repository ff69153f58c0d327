"""With keys configured, only /healthz, /readyz and /metrics are open."""

from __future__ import annotations

import httpx
import openai
import pytest
from starlette.routing import Route

from deployments.profile import load_profile
from gateway.app import create_app
from gateway.middleware import ADMIN_PREFIX, OPEN_PATHS
from gateway.settings import GatewaySettings
from tests.e2e.conftest import API_KEY, Stack


def _all_routes() -> list[tuple[str, str]]:
    app = create_app(GatewaySettings(profile=load_profile("test-fake")))
    pairs = []
    for route in app.routes:
        assert isinstance(route, Route)
        for method in sorted(route.methods or {"GET"}):
            if method != "HEAD":
                pairs.append((method, route.path))
    return pairs


ROUTES = _all_routes()


def test_route_walk_sees_the_api() -> None:
    paths = {p for _, p in ROUTES}
    assert {"/v1/chat/completions", "/v1/models", "/healthz", "/readyz", "/metrics"} <= paths


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_but_the_open_list_needs_a_key(keyed: Stack, method: str, path: str) -> None:
    root = keyed.base_url.removesuffix("/v1")
    resp = httpx.request(method, root + path, json={})
    if path in OPEN_PATHS:
        assert resp.status_code == 200
    else:
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert resp.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p in ROUTES if p.startswith(ADMIN_PREFIX)])
def test_admin_routes_refuse_a_valid_api_key(keyed: Stack, method: str, path: str) -> None:
    root = keyed.base_url.removesuffix("/v1")
    resp = httpx.request(method, root + path, json={}, headers={"authorization": f"Bearer {API_KEY}"})
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")


def test_unknown_routes_need_a_key_too(keyed: Stack) -> None:
    resp = httpx.get(keyed.base_url + "/secret-admin-thing")
    assert resp.status_code == 401


@pytest.mark.parametrize("header", ["Bearer wrong-key-123456", "Basic " + API_KEY, "Bearer", API_KEY])
def test_wrong_or_malformed_credentials_are_401(keyed: Stack, header: str) -> None:
    resp = httpx.get(keyed.base_url + "/models", headers={"authorization": header})
    assert resp.status_code == 401


def test_the_right_key_works_with_the_openai_client(keyed: Stack) -> None:
    reply = keyed.client(api_key=API_KEY).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Hello"}]
    )
    assert reply.choices[0].message.content
    with pytest.raises(openai.AuthenticationError):
        keyed.client(api_key="sk-wrong-000000").models.list()
