"""The cluster manifests, as `kubectl apply -k k8s/` would send them, are valid and agree with each other.

Rendered by tests/unit/kustomize_lite.py (no kustomize binary, no cluster, no network); core objects
validated with kubernetes-validate, custom resources against their CRDs' own schemas (KubeRay from
../shared, prometheus-operator vendored under tests/fixtures).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deployments.planning import derive_engine_limits
from deployments.profile import load_profile, parse_profile
from deployments.profile_export import export_profile
from gateway.cli.serve import ABORT_AFTER_S
from tests.unit.k8s_support import KUBERAY_CRD, TEST_KEYS, crd_schema, monitoring_crd, rendered
from tests.unit.kustomize_lite import Obj

K8S_VERSION = "1.33.0"
MONITORING_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
# After SIGTERM the gateway drains for drain_period_s, then uvicorn aborts what is left within
# ABORT_AFTER_S (gateway/cli/serve.py) and the app shuts down; the pod must not be killed before.
SHUTDOWN_AFTER_DRAIN_S = ABORT_AFTER_S + 4.0


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    return rendered(tmp_path_factory.mktemp("k8s"))


def _of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def _one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    (found,) = [o for o in _of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    return found


def _gateway_container(objects: list[Obj]) -> Obj:
    containers: list[Obj] = _one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def _arg(container: Obj, flag: str) -> str:
    args: list[str] = container["args"]
    return args[args.index(flag) + 1]


def _serve_config(objects: list[Obj]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(_one(objects, "RayService")["spec"]["serveConfigV2"])
    return config


def _ray_pod_templates(objects: list[Obj]) -> dict[str, Any]:
    """The RayService's pod templates by KubeRay node type (head, worker)."""
    cluster = _one(objects, "RayService")["spec"]["rayClusterConfig"]
    templates = {"head": cluster["headGroupSpec"]["template"]}
    for group in cluster["workerGroupSpecs"]:
        templates["worker"] = group["template"]
    return templates


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- every object is valid ---------------------------------------------------------------------


def test_the_kustomization_renders_every_object_once(objects: list[Obj]) -> None:
    tiers_and_gateway = ["RayService", "ServiceAccount", "Deployment", "Service", "HorizontalPodAutoscaler"]
    tiers_and_gateway.append("PodDisruptionBudget")
    generated = ["ConfigMap", "ConfigMap", "Secret"]
    monitoring = ["ServiceMonitor", "PodMonitor", "PodMonitor", "PrometheusRule"]
    assert sorted(o["kind"] for o in objects) == sorted(tiers_and_gateway + generated + monitoring)
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tiergate" for o in objects)


def test_core_objects_validate_strictly(objects: list[Obj]) -> None:
    core = [o for o in objects if o["kind"] != "RayService" and o["kind"] not in MONITORING_KINDS]
    assert len(core) == 8
    for obj in core:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_rayservice_validates_against_the_kuberay_crd(objects: list[Obj]) -> None:
    if not KUBERAY_CRD.is_file():
        pytest.skip("the KubeRay RayService CRD is not beside the repository (../shared/data/k8s-crds)")
    jsonschema.validate(_one(objects, "RayService"), crd_schema(KUBERAY_CRD))


@pytest.mark.parametrize("kind", MONITORING_KINDS)
def test_monitoring_objects_validate_against_the_prometheus_operator_crds(objects: list[Obj], kind: str) -> None:
    schema = crd_schema(monitoring_crd(kind))
    found = _of_kind(objects, kind)
    assert found
    for obj in found:
        jsonschema.validate(obj, schema)


def test_strict_crd_schemas_refuse_a_misspelt_field(objects: list[Obj]) -> None:
    monitor = json.loads(json.dumps(_one(objects, "ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        jsonschema.validate(monitor, crd_schema(monitoring_crd("ServiceMonitor")))


# --- the tiers ---------------------------------------------------------------------------------


def test_rayservice_serves_a_shipped_profile_through_the_builder(objects: list[Obj]) -> None:
    serve = _serve_config(objects)
    (app,) = serve["applications"]
    module, _, func = app["import_path"].partition(":")
    assert (module, func) == ("deployments.app", "build_app")
    profile = load_profile(app["args"]["profile"], apply_env=False)
    assert serve["http_options"]["port"] == profile.ray_serve_http_port
    # The worker group holds every GPU the profile's engines need, and the TP tier fits one pod.
    groups = _one(objects, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    gpus = [
        (int(c["resources"]["limits"]["nvidia.com/gpu"]), group["maxReplicas"])
        for group in groups
        for c in group["template"]["spec"]["containers"]
    ]
    tensor_parallel = [derive_engine_limits(t).tensor_parallel_size for t in profile.tiers if t.serving]
    assert sum(tensor_parallel) <= sum(per_pod * pods for per_pod, pods in gpus)
    assert max(tensor_parallel) <= max(per_pod for per_pod, _ in gpus)


def test_the_serve_config_builds_a_ray_serve_application(objects: list[Obj]) -> None:
    pytest.importorskip("ray.serve.llm", reason="Ray Serve LLM is in the serve extra (`make setup`)")
    from ray.serve.deployment import Application

    (app,) = _serve_config(objects)["applications"]
    module, _, func = app["import_path"].partition(":")
    built = getattr(importlib.import_module(module), func)(app["args"])
    assert isinstance(built, Application)


# --- the gateway: profile, keys, probes, shutdown ----------------------------------------------


def test_the_policy_configmap_is_the_tiers_profile_without_keys(objects: list[Obj]) -> None:
    (app,) = _serve_config(objects)["applications"]
    data = yaml.safe_load(_one(objects, "ConfigMap", "tiergate-profile")["data"]["profile.yaml"])
    profile = parse_profile(data, "the tiergate-profile ConfigMap")
    assert not profile.gateway.api_keys and profile.gateway.admin_key is None
    # Generated, not hand-kept: a change to the shipped profile's tiers or routing shows here until it
    # is exported again. The gateway section may differ: it is the cluster's (drain, limits).
    exported = yaml.safe_load(export_profile(app["args"]["profile"])[0])
    exported.pop("gateway", None)
    in_cluster = {k: v for k, v in data.items() if k != "gateway"}
    assert in_cluster == exported, (
        f"run: tiergate profile export {app['args']['profile']} --out k8s/policy/profile.yaml"
    )


def test_the_gateway_reads_its_profile_from_the_mounted_configmap(objects: list[Obj]) -> None:
    spec = _one(objects, "Deployment")["spec"]["template"]["spec"]
    container = _gateway_container(objects)
    volumes = {v["name"]: v for v in spec["volumes"]}
    profile_path = Path(_arg(container, "--profile"))
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == profile_path.parent]
    # A subPath mount would never see an edited ConfigMap, and the routing would never reload.
    assert "subPath" not in mount
    configmap = _one(objects, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
    assert profile_path.name in configmap["data"]


def test_the_gateway_has_a_writable_temporary_directory(objects: list[Obj]) -> None:
    spec = _one(objects, "Deployment")["spec"]["template"]["spec"]
    container = _gateway_container(objects)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert not tmp.get("readOnly", False)
    assert "emptyDir" in {v["name"]: v for v in spec["volumes"]}[tmp["name"]]


def test_api_keys_come_from_the_generated_secret(objects: list[Obj]) -> None:
    secret = _one(objects, "Secret")
    env = {e["name"]: e for e in _gateway_container(objects)["env"]}
    for variable, key in (("TIERGATE_API_KEYS", "api-keys"), ("TIERGATE_ADMIN_KEY", "admin-key")):
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        # The generated name carries a content hash; the reference must follow it.
        assert ref["name"] == secret["metadata"]["name"] != "tiergate-keys"
        assert ref["key"] == key and key in secret["data"]
    assert env["TIERGATE_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_the_profile_with_the_secret_as_env_is_a_valid_gateway(objects: list[Obj]) -> None:
    from deployments.profile import with_env_overrides

    data = yaml.safe_load(_one(objects, "ConfigMap", "tiergate-profile")["data"]["profile.yaml"])
    env = {e["name"]: e.get("value") for e in _gateway_container(objects)["env"]}
    env["TIERGATE_API_KEYS"], env["TIERGATE_ADMIN_KEY"] = TEST_KEYS["api-keys"], TEST_KEYS["admin-key"]
    profile = with_env_overrides(parse_profile(data), {k: v for k, v in env.items() if v is not None})
    assert [k.get_secret_value() for k in profile.gateway.api_keys] == TEST_KEYS["api-keys"].split(",")
    (service,) = [o["metadata"]["name"] for o in objects if o["kind"] == "RayService"]
    assert all(
        t.endpoint.startswith(f"http://{service}-serve-svc:{profile.ray_serve_http_port}/") for t in profile.tiers
    )


def test_termination_grace_covers_the_drain_and_the_shutdown(objects: list[Obj]) -> None:
    data = yaml.safe_load(_one(objects, "ConfigMap", "tiergate-profile")["data"]["profile.yaml"])
    gateway = parse_profile(data).gateway
    drain_s = gateway.drain_period_s
    grace_s = _one(objects, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace_s >= drain_s + SHUTDOWN_AFTER_DRAIN_S


def test_admission_shares_assume_the_hpas_largest_scale_out(objects: list[Obj]) -> None:
    # Each process admits against budget / (gateway.replicas x --workers): if the profile counted
    # fewer pods than the HPA may run, the pods together could offer a tier more than its KV budget.
    data = yaml.safe_load(_one(objects, "ConfigMap", "tiergate-profile")["data"]["profile.yaml"])
    replicas = parse_profile(data).gateway.replicas
    assert replicas >= _one(objects, "HorizontalPodAutoscaler")["spec"]["maxReplicas"]
    assert replicas >= _one(objects, "Deployment")["spec"]["replicas"]


def test_probes_are_the_gateways_health_and_readiness(objects: list[Obj]) -> None:
    container = _gateway_container(objects)
    probes = (container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"])
    assert probes == ("/readyz", "/healthz")


# --- names, ports and selectors agree ----------------------------------------------------------


def test_service_deployment_and_servicemonitor_agree_on_labels_and_ports(objects: list[Obj]) -> None:
    deployment, service = _one(objects, "Deployment"), _one(objects, "Service")
    monitor = _one(objects, "ServiceMonitor")
    container = _gateway_container(objects)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert _selects(service["spec"]["selector"], pod_labels)
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_ports[container["readinessProbe"]["httpGet"]["port"]] == int(_arg(container, "--port"))
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert service_ports[endpoint["port"]]["targetPort"] in container_ports
    assert endpoint["path"] == "/metrics"
    for kind in ("PodDisruptionBudget",):
        assert _selects(_one(objects, kind)["spec"]["selector"]["matchLabels"], pod_labels)
    target = _one(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_the_metrics_path_needs_no_key() -> None:
    from gateway.middleware import OPEN_PATHS

    assert "/metrics" in OPEN_PATHS


def test_podmonitors_select_the_ray_head_and_workers_and_label_the_cluster(objects: list[Obj]) -> None:
    templates = _ray_pod_templates(objects)
    covered = set()
    for monitor in _of_kind(objects, "PodMonitor"):
        selector = dict(monitor["spec"]["selector"]["matchLabels"])
        node_type = selector.pop("ray.io/node-type")  # set by KubeRay on every pod it creates
        template = templates[node_type]
        assert _selects(selector, template["metadata"]["labels"])
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert endpoint["port"] in ports
        relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}["ray_io_cluster"]
        assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_label_ray_io_cluster"]
        covered.add(node_type)
    assert covered == {"head", "worker"}


def test_monitoring_objects_carry_one_prometheus_selector_label(objects: list[Obj]) -> None:
    releases = {o["metadata"]["labels"].get("release") for o in objects if o["kind"] in MONITORING_KINDS}
    assert len(releases) == 1 and None not in releases


def test_the_dashboard_configmap_is_picked_up_by_the_grafana_sidecar(objects: list[Obj]) -> None:
    configmap = _one(objects, "ConfigMap", "tiergate-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    ((key, text),) = configmap["data"].items()
    dashboard = json.loads(text)
    assert key.endswith(".json") and dashboard["uid"] and dashboard["panels"]
    # A ConfigMap holds at most 1 MiB; client-side apply also keeps a copy in an annotation.
    assert len(text.encode()) < 1024 * 1024


def test_prometheusrule_alerts_are_named_and_have_an_expression(objects: list[Obj]) -> None:
    rule = _one(objects, "PrometheusRule")
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert rules and all(r["expr"].strip() for r in rules)
    assert all(r.get("alert") or r.get("record") for r in rules)
