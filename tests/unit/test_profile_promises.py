"""A profile field that nothing reads yet says so in its description, instead of promising behaviour."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from deployments.profile import GatewaySpec


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (GatewaySpec, "admin_key"),
    ],
)
def test_fields_without_behaviour_say_not_yet_used(model: type[BaseModel], field: str) -> None:
    description = model.model_fields[field].description or ""
    assert "Not yet used" in description
