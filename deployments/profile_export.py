"""A profile written back out as a standalone file, its secrets left out.

In Kubernetes the profile lives in a ConfigMap (readable by anyone who may read the namespace's
config) while keys live in a Secret and reach the gateway as TIERGATE_API_KEYS / TIERGATE_ADMIN_KEY
(`with_env_overrides`). So an exported profile holds every field its file set except those that
carry a secret.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, SecretStr

from deployments.profile import load_profile, parse_profile, resolve_profile_path


def _holds_secret(value: Any) -> bool:
    if isinstance(value, SecretStr):
        return True
    if isinstance(value, BaseModel):
        return any(_holds_secret(getattr(value, name)) for name in type(value).model_fields)
    if isinstance(value, list | tuple):
        return any(_holds_secret(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_secret(v) for v in value.values())
    return False


def _drop_secrets(model: BaseModel, data: dict[str, Any], prefix: str, dropped: list[str]) -> None:
    for name in type(model).model_fields:
        if name not in data:
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            _drop_secrets(value, data[name], f"{prefix}{name}.", dropped)
        elif _holds_secret(value):
            # The whole field goes: a list entry with its key cut out would not validate.
            del data[name]
            dropped.append(prefix + name)


def export_profile(name_or_path: str) -> tuple[str, list[str]]:
    """The profile as YAML text (only the fields its file sets) and the dotted names of fields left out."""
    path = resolve_profile_path(name_or_path)
    # Paths stay as the file wrote them: an absolute path of this machine means nothing in the cluster.
    profile = load_profile(name_or_path, apply_env=False, resolve_files=False)
    data = profile.model_dump(mode="json", exclude_unset=True)
    dropped: list[str] = []
    _drop_secrets(profile, data, "", dropped)
    parse_profile(data, path.name)  # what is written must load back
    header = (
        f"# Exported by `tiergate profile export {name_or_path}` from {path.name}."
        " API keys are not here: they come from a Secret.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False), dropped
