"""The cluster manifests are valid Kubernetes objects and agree with the profile they serve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deployments.planning import derive_engine_limits
from deployments.profile import load_profile

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
CRD = REPO.parent / "shared" / "data" / "k8s-crds" / "ray.io_rayservices.yaml"
K8S_VERSION = "1.33.0"


def _docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _docs() if d["kind"] == kind]


@pytest.mark.parametrize("doc", [d for d in _docs() if d["kind"] != "RayService"], ids=lambda d: d["kind"])
def test_core_objects_validate_strictly(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_rayservice_validates_against_the_kuberay_crd() -> None:
    if not CRD.is_file():
        pytest.skip("the KubeRay RayService CRD is not beside the repository (../shared/data/k8s-crds)")
    crd = yaml.safe_load(CRD.read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    (service,) = _by_kind("RayService")
    jsonschema.validate(service, schema)


def test_rayservice_serves_a_shipped_profile_through_the_builder() -> None:
    (service,) = _by_kind("RayService")
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    module, _, func = app["import_path"].partition(":")
    assert (module, func) == ("deployments.app", "build_app")
    profile = load_profile(app["args"]["profile"], apply_env=False)
    assert serve["http_options"]["port"] == profile.ray_serve_http_port
    # The worker group holds every GPU the profile's engines need, and the TP tier fits one pod.
    gpus_needed = sum(derive_engine_limits(t).tensor_parallel_size for t in profile.tiers if t.serving)
    per_pod = max(
        int(c["resources"]["limits"]["nvidia.com/gpu"])
        for group in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        for c in group["template"]["spec"]["containers"]
    )
    total = sum(
        int(c["resources"]["limits"]["nvidia.com/gpu"]) * group["maxReplicas"]
        for group in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        for c in group["template"]["spec"]["containers"]
    )
    assert gpus_needed <= total
    assert max(derive_engine_limits(t).tensor_parallel_size for t in profile.tiers if t.serving) <= per_pod


def test_gateway_runs_the_same_profile_and_reaches_serve_through_its_service() -> None:
    (deployment,) = _by_kind("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    (service,) = _by_kind("RayService")
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert args[args.index("--profile") + 1] == serve["applications"][0]["args"]["profile"]
    env = {e["name"]: e for e in container["env"]}
    profile = load_profile(args[args.index("--profile") + 1], apply_env=False)
    serve_url = env["TIERGATE_SERVE_URL"]["value"]
    assert serve_url == f"http://{service['metadata']['name']}-serve-svc:{profile.ray_serve_http_port}"
    assert "secretKeyRef" in env["TIERGATE_API_KEYS"]["valueFrom"]
    probes = (container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"])
    assert probes == ("/readyz", "/healthz")
