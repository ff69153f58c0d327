"""The test renderer of kustomizations agrees with kustomize itself on what k8s/ uses."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.k8s_support import k8s_copy
from tests.unit.kustomize_lite import Obj, Unsupported, render

# Suffixes printed by `kubectl kustomize` (kustomize v5.5.0) for the generators of `_golden_folder`.
GOLDEN_NAMES = {
    ("ConfigMap", "cm"): "cm-b26b6ggk94",
    ("Secret", "sec"): "sec-9c6hhg95gc",
    ("Secret", "sec2"): "sec2-8d9db26b4d",
    ("Secret", "quoted"): "quoted-727488t85d",
}


def _golden_folder(root: Path) -> Path:
    (root / "p.yaml").write_text('a: 1\nb: "<&>"\n', encoding="utf-8")
    (root / "keys.env").write_text("api-keys=abc<&>défg,h\nadmin-key=x\n", encoding="utf-8")
    (root / "e.env").write_text('  k1="a,b"\n# c\n\nk2=x y \nk3=\n', encoding="utf-8")
    (root / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "configMapGenerator": [{"name": "cm", "files": ["profile.yaml=p.yaml"], "literals": ["x=y<&>é"]}],
                "secretGenerator": [
                    {"name": "sec", "envs": ["keys.env"]},
                    {"name": "sec2", "literals": ["k=v"], "type": "kubernetes.io/tls"},
                    {"name": "quoted", "envs": ["e.env"]},
                ],
            }
        ),
        encoding="utf-8",
    )
    return root


def _by_id(objects: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_generated_names_carry_kustomizes_content_hash(tmp_path: Path) -> None:
    names = {o["metadata"]["name"] for o in render(_golden_folder(tmp_path))}
    assert names == set(GOLDEN_NAMES.values())


def test_env_files_keep_values_as_written(tmp_path: Path) -> None:
    quoted = _by_id(render(_golden_folder(tmp_path)))[("Secret", GOLDEN_NAMES[("Secret", "quoted")])]
    values = {k: base64.b64decode(v).decode() for k, v in quoted["data"].items()}
    assert values == {"k1": '"a,b"', "k2": "x y ", "k3": ""}


def test_a_reference_to_a_generated_object_follows_its_hashed_name(tmp_path: Path) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "i",
                            "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "k"}}}],
                            "envFrom": [{"configMapRef": {"name": "hashed"}}],
                        }
                    ],
                    "volumes": [{"name": "v", "configMap": {"name": "plain"}}],
                },
            },
        },
    }
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(deployment), encoding="utf-8")
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["d.yaml"],
                "labels": [{"pairs": {"team": "x"}}],
                "configMapGenerator": [
                    {"name": "hashed", "literals": ["a=1"]},
                    {
                        "name": "plain",
                        "literals": ["a=1"],
                        "options": {"disableNameSuffixHash": True, "labels": {"l": "1"}},
                    },
                ],
                "secretGenerator": [{"name": "keys", "literals": ["k=v"]}],
            }
        ),
        encoding="utf-8",
    )
    objects = _by_id(render(tmp_path))
    spec = objects[("Deployment", "d")]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"].startswith("keys-")
    assert container["envFrom"][0]["configMapRef"]["name"].startswith("hashed-")
    assert spec["volumes"][0]["configMap"]["name"] == "plain"
    assert objects[("ConfigMap", "plain")]["metadata"]["labels"] == {"l": "1", "team": "x"}
    # `labels` pairs go on metadata only, never into selectors or pod templates.
    assert objects[("Deployment", "d")]["metadata"]["labels"] == {"team": "x"}
    assert objects[("Deployment", "d")]["spec"]["template"]["metadata"]["labels"] == {"a": "b"}


def test_a_folder_resource_gets_its_own_labels_then_the_parents(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", encoding="utf-8")
    (sub / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["cm.yaml"], "labels": [{"pairs": {"inner": "1"}}]}), encoding="utf-8"
    )
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["sub"], "labels": [{"pairs": {"outer": "2"}}]}), encoding="utf-8"
    )
    (configmap,) = render(tmp_path)
    assert configmap["metadata"]["labels"] == {"inner": "1", "outer": "2"}


@pytest.mark.parametrize(
    ("kustomization", "message"),
    [
        ({"patches": [{"path": "p.yaml"}]}, "patches"),
        ({"labels": [{"pairs": {"a": "b"}, "includeSelectors": True}]}, "labels"),
        ({"resources": ["../outside.yaml"]}, "outside"),
        ({"resources": ["empty"]}, "no such file or folder"),
        ({"configMapGenerator": [{"name": "c", "behavior": "merge"}]}, "behavior"),
        ({"secretGenerator": [{"name": "s", "envs": ["missing.env"]}]}, "no such file"),
    ],
)
def test_what_the_renderer_does_not_do_is_refused(tmp_path: Path, kustomization: Obj, message: str) -> None:
    folder = tmp_path / "k"
    (folder / "empty").mkdir(parents=True)
    (tmp_path / "outside.yaml").write_text("kind: ConfigMap\n", encoding="utf-8")
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization), encoding="utf-8")
    with pytest.raises(Unsupported, match=message):
        render(folder)


def _kubectl_kustomize(folder: Path) -> list[Obj]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the renderer is checked against its golden names only")
    done = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.mark.parametrize("which", ["golden", "k8s"])
def test_renders_what_kubectl_kustomize_renders(tmp_path: Path, which: str) -> None:
    folder = _golden_folder(tmp_path) if which == "golden" else k8s_copy(tmp_path)
    assert _by_id(render(folder)) == _by_id(_kubectl_kustomize(folder))
