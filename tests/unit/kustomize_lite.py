"""A renderer for the part of kustomize that k8s/kustomization.yaml uses, so tests need no kustomize.

Supported: `resources` (YAML files and folders with their own kustomization, under the
kustomization's folder), `configMapGenerator` and
`secretGenerator` (`files`, `literals`, `envs`; `options` with `disableNameSuffixHash`, `labels`,
`annotations`; a Secret's `type`) and `labels` (pairs on every object's metadata only). A generated
object's name gets kustomize's content hash unless disabled, and references to it from pod
templates follow the new name. Anything else in the file raises `Unsupported`, so a kustomization
that grows past this subset fails its tests instead of rendering differently from `kubectl apply -k`.
`tests/unit/test_kustomize_lite.py` compares the output with `kubectl kustomize` where kubectl is
installed.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

_TOP_LEVEL = {"apiVersion", "kind", "resources", "labels", "configMapGenerator", "secretGenerator"}
_GENERATOR = {"name", "files", "literals", "envs", "options"}
_OPTIONS = {"disableNameSuffixHash", "labels", "annotations"}
# Kinds whose pod template kustomize rewrites references in, and where the template sits.
_POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


class Unsupported(ValueError):
    """The kustomization uses something this renderer does not implement, or kustomize refuses."""


def name_hash(obj: Obj) -> str:
    """kustomize's 10-character suffix for a generated ConfigMap or Secret.

    kustomize hashes the kind, the data (and a Secret's type) as Go's encoding/json writes them:
    keys sorted, no spaces, `<`, `>`, `&` escaped. The name takes part as an empty string (checked
    against `kubectl kustomize`, kustomize v5.5.0: same content under two names, same suffix).
    The first 10 hex digits of the sha256 are kept, with 0, 1, 3, a, e swapped for letters so the
    suffix cannot read as a number or a word.
    """
    encoded: Obj = {"kind": obj["kind"], "name": "", "data": obj.get("data", {})}
    if obj["kind"] == "Secret":
        encoded["type"] = obj.get("type", "Opaque")
    text = json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, escaped)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _inside(root: Path, relative: str, *, folder_ok: bool = False) -> Path:
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise Unsupported(f"{relative}: outside the kustomization's folder (kustomize refuses it)")
    if not (path.is_file() or (folder_ok and (path / "kustomization.yaml").is_file())):
        raise Unsupported(f"{relative}: no such file" + (" or folder with a kustomization.yaml" if folder_ok else ""))
    return path


def _env_pairs(text: str, source: str) -> Iterator[tuple[str, str]]:
    # kustomize's env files: leading blanks dropped, blank and '#' lines skipped, split at the first
    # '='; the value is kept as written (quotes and trailing blanks included).
    for line in text.splitlines():
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise Unsupported(f"{source}: {key!r} has no '=' (a value from the environment is not supported)")
        yield key, value


def _generated(spec: Obj, kind: str, root: Path) -> Obj:
    unknown = set(spec) - _GENERATOR - ({"type"} if kind == "Secret" else set())
    if unknown:
        raise Unsupported(f"{kind} generator {spec.get('name')!r}: {sorted(unknown)} not supported")
    options: Obj = spec.get("options", {})
    if set(options) - _OPTIONS:
        raise Unsupported(f"generator options {sorted(set(options) - _OPTIONS)} not supported")
    data: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    for item in spec.get("files", []):
        key, _, rel = item.rpartition("=")
        path = _inside(root, rel)
        pairs.append((key or path.name, path.read_text(encoding="utf-8")))
    for item in spec.get("literals", []):
        key, sep, value = item.partition("=")
        if not sep:
            raise Unsupported(f"literal {item!r} has no '='")
        pairs.append((key, value))
    for rel in spec.get("envs", []):
        pairs.extend(_env_pairs(_inside(root, rel).read_text(encoding="utf-8"), rel))
    for key, value in pairs:
        if key in data:
            raise Unsupported(f"{kind} {spec['name']!r}: key {key!r} given twice")
        data[key] = base64.b64encode(value.encode("utf-8")).decode("ascii") if kind == "Secret" else value
    obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}, "data": data}
    if kind == "Secret":
        obj["type"] = spec.get("type", "Opaque")
    for field in ("labels", "annotations"):
        if options.get(field):
            obj["metadata"][field] = dict(options[field])
    if not options.get("disableNameSuffixHash", False):
        obj["metadata"]["name"] = f"{spec['name']}-{name_hash(obj)}"
    return obj


def _pod_spec(obj: Obj) -> Obj | None:
    node: Any = obj
    for key in _POD_SPEC_PATHS.get(obj["kind"], ()):
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) and obj["kind"] in _POD_SPEC_PATHS else None


def _rename(ref: Any, field: str, names: dict[str, str]) -> None:
    if isinstance(ref, dict) and ref.get(field) in names:
        ref[field] = names[ref[field]]


def _follow_renames(obj: Obj, configmaps: dict[str, str], secrets: dict[str, str]) -> None:
    spec = _pod_spec(obj)
    if spec is None:
        return
    for volume in spec.get("volumes", []):
        _rename(volume.get("configMap"), "name", configmaps)
        _rename(volume.get("secret"), "secretName", secrets)
        for source in (volume.get("projected") or {}).get("sources", []):
            _rename(source.get("configMap"), "name", configmaps)
            _rename(source.get("secret"), "name", secrets)
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        for env in container.get("env", []):
            value_from = env.get("valueFrom") or {}
            _rename(value_from.get("configMapKeyRef"), "name", configmaps)
            _rename(value_from.get("secretKeyRef"), "name", secrets)
        for env_from in container.get("envFrom", []):
            _rename(env_from.get("configMapRef"), "name", configmaps)
            _rename(env_from.get("secretRef"), "name", secrets)


def render(folder: Path) -> list[Obj]:
    """The objects `kubectl kustomize folder` would print (order aside)."""
    spec: Obj = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    if set(spec) - _TOP_LEVEL:
        raise Unsupported(f"kustomization fields {sorted(set(spec) - _TOP_LEVEL)} not supported")
    if spec.get("kind", "Kustomization") != "Kustomization":
        raise Unsupported(f"kind {spec['kind']!r}: only a Kustomization")
    objects: list[Obj] = []
    for rel in spec.get("resources", []):
        path = _inside(folder, rel, folder_ok=True)
        if path.is_dir():
            objects.extend(render(path))  # rendered on its own first; this level's labels then apply
        elif path.suffix in (".yaml", ".yml"):
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)
        else:
            raise Unsupported(f"{rel}: only YAML files and kustomization folders are supported as resources")
    configmaps = {g["name"]: _generated(g, "ConfigMap", folder) for g in spec.get("configMapGenerator", [])}
    secrets = {g["name"]: _generated(g, "Secret", folder) for g in spec.get("secretGenerator", [])}
    renamed_cm = {name: o["metadata"]["name"] for name, o in configmaps.items()}
    renamed_s = {name: o["metadata"]["name"] for name, o in secrets.items()}
    for obj in objects:
        _follow_renames(obj, renamed_cm, renamed_s)
    objects += [*configmaps.values(), *secrets.values()]
    for entry in spec.get("labels", []):
        if set(entry) != {"pairs"}:
            raise Unsupported("labels: only `pairs`, added to metadata (no includeSelectors/includeTemplates)")
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    seen: set[tuple[str, str]] = set()
    for obj in objects:
        ident = (obj["kind"], obj["metadata"]["name"])
        if ident in seen:
            raise Unsupported(f"{ident[0]} {ident[1]!r} appears twice (kustomize refuses it)")
        seen.add(ident)
    return objects
