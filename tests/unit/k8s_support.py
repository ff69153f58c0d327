"""Helpers for the manifest tests: the rendered kustomization and strict CRD schemas."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.unit.kustomize_lite import Obj, render

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
KUBERAY_CRD = REPO.parent / "shared" / "data" / "k8s-crds" / "ray.io_rayservices.yaml"
MONITORING_CRDS = REPO / "tests" / "fixtures" / "prometheus-operator-crds"
# What the test Secret holds (k8s/keys.env is never in git; a deployer writes their own).
TEST_KEYS = {"api-keys": "test-key-0001,test-key-0002", "admin-key": "test-admin-key-000111"}


def k8s_copy(dest: Path) -> Path:
    """k8s/ copied under dest with a keys.env, ready for `render` or `kubectl kustomize`."""
    folder = dest / "k8s"
    shutil.copytree(K8S, folder, ignore=shutil.ignore_patterns("keys.env"))
    (folder / "keys.env").write_text("".join(f"{k}={v}\n" for k, v in TEST_KEYS.items()), encoding="utf-8")
    return folder


def rendered(dest: Path) -> list[Obj]:
    return render(k8s_copy(dest))


# Go's regexp takes flags anywhere (`^(?i)(abort|warn)?$` in the PrometheusRule CRD); Python's re
# only at the start of the pattern.
_GO_LEADING_FLAGS = re.compile(r"^\^\(\?([a-zA-Z]+)\)")


def _forbid_unknown_fields(node: Any) -> None:
    # The API server drops (or, with field validation, refuses) fields a CRD does not declare;
    # jsonschema accepts them unless told, so a misspelt field would pass unseen.
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            node["pattern"] = _GO_LEADING_FLAGS.sub(r"(?\1)^", node["pattern"])
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            _forbid_unknown_fields(value)
    elif isinstance(node, list):
        for value in node:
            _forbid_unknown_fields(value)


def crd_schema(path: Path, version: str = "v1") -> dict[str, Any]:
    """The openAPIV3Schema of one version of a CRD file, with undeclared fields refused."""
    crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
    _forbid_unknown_fields(schema)
    return schema


def monitoring_crd(kind: str) -> Path:
    return MONITORING_CRDS / f"monitoring.coreos.com_{kind.lower()}s.yaml"
