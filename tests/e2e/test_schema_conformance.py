"""schemathesis against the gateway's own OpenAPI document, with every check it has.

Each generated request, valid or not, must get an answer the document promises: a documented status
and content type, a body matching the response schema, `Allow` on a 405, never a 5xx, a schema-valid
request never refused as invalid and a schema-invalid one never accepted, auth enforced where the
document says it is. Run over real processes (a fake tier behind `tiergate serve`) so uvicorn's own
handling is tested too: a gateway without API keys, and one with keys, called with and without them.
The admin routes get the admin key in every run but the keyless one.

Bounded for `make test`: a few dozen examples per operation (~60 s on 2 cores).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import settings
from schemathesis.config import SchemathesisConfig
from schemathesis.schemas import APIOperation

from deployments.profile import load_profile, with_env_overrides
from gateway.app import create_app
from gateway.middleware import ADMIN_PREFIX, OPEN_PATHS
from gateway.settings import GatewaySettings
from tests.e2e.conftest import API_KEY
from tests.procs import fake_upstream, gateway, write_profile

Case = schemathesis.Case[APIOperation[Any, Any, Any, Any]]
ADMIN_KEY = "adm-conformance-0123456789"
MAX_EXAMPLES = 25

CONFIG: dict[str, Any] = {
    # The first policy change loads the learned scorer (a second or more on a busy machine).
    "request-timeout": 30,
    # Extra parameters off: HTTP lets a caller send any header, so an unknown one is no schema violation.
    "generation": {"max-examples": MAX_EXAMPLES, "database": "none", "allow-extra-parameters": False},
    "phases": {"stateful": {"enabled": False}},
    "operations": [
        {
            # The routing section has rules JSON Schema cannot state (thresholds ascending, a learned
            # policy's scorer artifact must load), so a schema-valid policy may still be a 400 there.
            "include-path": "/admin/policy",
            "include-method": "PUT",
            "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401"]}},
        }
    ],
}


def _serve(tmp: pytest.TempPathFactory, env: dict[str, str]) -> Iterator[str]:
    """One fake tier serving all three tiers, a gateway over it; yields the gateway's root URL."""
    with ExitStack() as stack:
        tier = stack.enter_context(fake_upstream())
        path = Path(tmp.mktemp("conformance")) / "profile.yaml"
        write_profile(path, "test-fake", endpoints={"small": tier, "medium": tier, "large": tier})
        base = stack.enter_context(gateway(path, env={"TIERGATE_ADMIN_KEY": ADMIN_KEY, **env}))
        yield base.removesuffix("/v1")


def _document(env: dict[str, str]) -> dict[str, Any]:
    """The OpenAPI document a gateway with these key settings serves (built in-process, at collection:
    schemathesis's fixture-based loader does not run under this pytest; the served one is compared below)."""
    profile = with_env_overrides(load_profile("test-fake", apply_env=False), {"TIERGATE_ADMIN_KEY": ADMIN_KEY, **env})
    return create_app(GatewaySettings(profile=profile)).openapi()


OPEN_ENV: dict[str, str] = {}
KEYED_ENV = {"TIERGATE_API_KEYS": API_KEY}
OPEN_DOCUMENT = _document(OPEN_ENV)
KEYED_DOCUMENT = _document(KEYED_ENV)
open_schema = schemathesis.openapi.from_dict(OPEN_DOCUMENT, config=SchemathesisConfig.from_dict(CONFIG))
keyed_schema = schemathesis.openapi.from_dict(KEYED_DOCUMENT, config=SchemathesisConfig.from_dict(CONFIG))


@pytest.fixture(scope="module")
def open_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve(tmp_path_factory, OPEN_ENV)


@pytest.fixture(scope="module")
def keyed_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve(tmp_path_factory, KEYED_ENV)


def test_the_tested_documents_are_the_ones_the_gateways_serve(open_gateway: str, keyed_gateway: str) -> None:
    assert httpx.get(open_gateway + "/openapi.json").json() == OPEN_DOCUMENT
    assert httpx.get(keyed_gateway + "/openapi.json", headers=_bearer(API_KEY)).json() == KEYED_DOCUMENT
    assert "security" not in KEYED_DOCUMENT["paths"]["/healthz"]["get"]
    assert KEYED_DOCUMENT["paths"]["/v1/models"]["get"]["security"] == [{"apiKey": []}]
    assert "security" not in OPEN_DOCUMENT["paths"]["/v1/models"]["get"]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@open_schema.parametrize()
def test_a_gateway_without_keys_answers_as_its_schema_promises(case: Case, open_gateway: str) -> None:
    case.call_and_validate(
        base_url=open_gateway, headers=_bearer(ADMIN_KEY) if case.path.startswith(ADMIN_PREFIX) else None
    )


SERVED = OPEN_DOCUMENT["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]["examples"]


@open_schema.include(path_regex="^/v1/chat/completions$", method="POST").parametrize()
@settings(max_examples=40)
def test_schema_valid_chat_requests_for_a_served_model_are_answered_end_to_end(case: Case, open_gateway: str) -> None:
    # Generated model names are almost never served (a 404): name a served one, which keeps the body
    # schema-valid, so routing, admission, the tier call and the relay run on arbitrary valid bodies.
    meta = case.meta
    valid = meta is not None and all(c.mode.is_positive for c in meta.components.values())
    valid = valid and (case.method.upper(), case.path) == ("POST", "/v1/chat/completions")
    if valid and isinstance(case.body, dict):
        case.body["model"] = SERVED[len(str(case.body)) % len(SERVED)]
    response = case.call_and_validate(base_url=open_gateway)
    if valid and isinstance(case.body, dict):
        assert response.status_code == 200, response.text


@keyed_schema.parametrize()
def test_a_keyed_gateway_answers_its_key_holders_as_its_schema_promises(case: Case, keyed_gateway: str) -> None:
    case.call_and_validate(
        base_url=keyed_gateway, headers=_bearer(ADMIN_KEY if case.path.startswith(ADMIN_PREFIX) else API_KEY)
    )


@keyed_schema.parametrize()
def test_a_keyed_gateway_refuses_callers_without_a_key_on_every_route_but_the_open_ones(
    case: Case, keyed_gateway: str
) -> None:
    response = case.call_and_validate(base_url=keyed_gateway)
    if case.path not in OPEN_PATHS and response.status_code != 405:
        assert response.status_code == 401, (case.method, case.path, response.status_code)
        assert response.headers["www-authenticate"][0].startswith("Bearer")
