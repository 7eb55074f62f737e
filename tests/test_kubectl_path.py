"""The manifests for `kubectl apply -k`: the stack folder applies on a cluster without the Prometheus
operator, and a kustomize image override (or none) reaches every reference to the image, checked with the
real kustomize (kubectl's)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from infra.workload.manifests import PLACEHOLDER_REGISTRY, render_manifests
from infra.workload.monitoring import MONITORING_KINDS
from infra.workload.smoke_job import EXPECTED_IMAGE_ENV
from tests.conftest import make_config

KUBECTL = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")


def kustomize(folder: Path) -> list[dict]:
    proc = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return list(yaml.safe_load_all(proc.stdout))


def write_rendered(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def test_kubectl_apply_of_the_stack_folder_needs_no_prometheus_crds(tmp_path):
    write_rendered(tmp_path, render_manifests(make_config(prometheusOperator=True)))
    kinds = {doc["kind"] for doc in kustomize(tmp_path)}
    assert "RayService" in kinds and not kinds & set(MONITORING_KINDS)
    assert {doc["kind"] for doc in kustomize(tmp_path / "monitoring")} == set(MONITORING_KINDS)


PUSHED_NAME = "registry.example.com/ml/qwen2vl-vllm"
PUSHED_DIGEST = "sha256:" + "cd" * 32


def image_references(value, images=None):
    """Every string that names the image: image fields, env values, command and args."""
    images = [] if images is None else images
    if isinstance(value, dict):
        for key, child in value.items():
            if key == "image" or (key == "value" and isinstance(child, str) and "qwen2vl-vllm" in child):
                images.append(child)
            else:
                image_references(child, images)
    elif isinstance(value, list):
        for child in value:
            image_references(child, images)
    elif isinstance(value, str) and "qwen2vl-vllm" in value:
        images.append(value)
    return images


def test_a_kustomize_image_override_reaches_every_image_reference(tmp_path):
    """N3: edit kustomization.yaml as `kustomize edit set image qwen2vl-vllm=<registry>/...@sha256:...`
    does, then render with the real kustomize (kubectl's)."""
    write_rendered(tmp_path, render_manifests(make_config()))
    kustomization = yaml.safe_load((tmp_path / "kustomization.yaml").read_text())
    (entry,) = kustomization["images"]
    entry.pop("newTag", None)
    entry.update({"newName": PUSHED_NAME, "digest": PUSHED_DIGEST})
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    docs = kustomize(tmp_path)
    references = image_references(docs)
    assert len(references) >= 5  # head, worker, smoke Job, its check and the check's expected image
    assert set(references) == {f"{PUSHED_NAME}@{PUSHED_DIGEST}"}
    job = next(doc for doc in docs if doc["kind"] == "Job")
    check = job["spec"]["template"]["spec"]["initContainers"][0]
    assert {e["name"]: e["value"] for e in check["env"]}[EXPECTED_IMAGE_ENV] == f"{PUSHED_NAME}@{PUSHED_DIGEST}"


def test_an_as_is_apply_names_a_registry_that_never_resolves(tmp_path):
    """Before the override, every reference names registry.invalid, never docker.io/library."""
    write_rendered(tmp_path, render_manifests(make_config()))
    references = image_references(kustomize(tmp_path))
    assert len(references) >= 5 and all(r.startswith(f"{PLACEHOLDER_REGISTRY}/qwen2vl-vllm:") for r in references)
