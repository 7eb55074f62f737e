"""The smoke-inference Job that runs after the RayService is up (its checks: qwen2vl_serve.smoke)."""

from __future__ import annotations

import hashlib
import json
import math

from infra.workload.pods import (
    API_KEY_FILE,
    checkov_annotations,
    container_security_context,
    credentials_volume,
    image_pull_policy,
    pod_security_context,
    scratch_volume,
)
from infra.workload.rayservice import rayservice
from infra.workload.spec import WorkloadSpec
from infra.workload.upgrade import model_bytes, ready_seconds

# The Job starts right after the RayService changed. Its init container waits until the endpoint selects
# a cluster that runs this deploy's image and its Serve app runs the new config at its target replicas:
# a new cluster, or on a stack scaled to zero a new replica, costs a whole cold start (a node, the image,
# the model and its load: upgrade.ready_seconds, the one estimate), here with a fourfold margin for a slow
# hub or a node that takes long to come.
COLD_START_MARGIN = 4
# Then the endpoint itself: the gate passed only once every Serve deployment was HEALTHY, so this is short.
WAIT_FOR_READY_SECONDS = 300
# The checks themselves (a burst of max_num_seqs streams).
CHECKS_SECONDS = 300


def wait_for_active_seconds(spec: WorkloadSpec) -> int:
    cfg = spec.cfg
    return math.ceil(COLD_START_MARGIN * ready_seconds(cfg, model_bytes(cfg), new_node=True) / 60) * 60


def active_deadline_seconds(spec: WorkloadSpec) -> int:
    return wait_for_active_seconds(spec) + WAIT_FOR_READY_SECONDS + CHECKS_SECONDS


def smoke_fingerprint(spec: WorkloadSpec) -> str:
    """Changes whenever KubeRay has something to roll out (the image, the cluster config, the Serve config:
    the whole RayService spec), so does the Job's name, and each such change is smoke-tested."""
    basis = json.dumps({"image": spec.image, "rayservice": rayservice(spec)["spec"]}, sort_keys=True)
    return hashlib.sha256(basis.encode()).hexdigest()[:10]


def smoke_job_name(spec: WorkloadSpec) -> str:
    return f"{spec.name}-smoke-{smoke_fingerprint(spec)}"


def smoke_report_name(spec: WorkloadSpec) -> str:
    return f"{spec.name}-smoke-report"


def smoke_account_name(spec: WorkloadSpec) -> str:
    return f"{spec.name}-smoke"


def smoke_service_account(spec: WorkloadSpec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": spec.metadata(smoke_account_name(spec), "smoke-test"),
        "automountServiceAccountToken": False,
    }


def smoke_role(spec: WorkloadSpec) -> dict:
    """The smoke Job may read which cluster serves (its RayService, that cluster, the endpoint Service),
    list the namespace's pods and events (why a GPU worker stays Pending), and write its report ConfigMap,
    and nothing else. RayCluster names are random (a suffix per cluster,
    utils/util.go:320-322), so that rule cannot name them."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": spec.metadata(smoke_account_name(spec), "smoke-test"),
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [smoke_report_name(spec)],
             "verbs": ["get", "update"]},
            {"apiGroups": ["ray.io"], "resources": ["rayservices"], "resourceNames": [spec.name], "verbs": ["get"]},
            {"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["services"], "resourceNames": [spec.endpoint_service], "verbs": ["get"]},
            # Why a worker stays Pending, as the node autoscaler records it (qwen2vl_serve/scale_up_watch.py).
            {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["list"]},
        ],
    }


def smoke_role_binding(spec: WorkloadSpec) -> dict:
    name = smoke_account_name(spec)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": spec.metadata(name, "smoke-test"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": spec.namespace}],
    }


ACTIVE_CLUSTER_CONTAINER = "active-cluster"
# The image the active cluster must run, as an environment variable of the check's container (never an
# argument): kustomize's `images:` override rewrites only image fields, so the kustomization carries a
# replacement that copies this container's own (rewritten) image field into the variable
# (infra/workload/manifests.py); Pulumi substitutes the pushed image in both (component.py).
EXPECTED_IMAGE_ENV = "QWEN2VL_EXPECTED_IMAGE"


def active_cluster_check(spec: WorkloadSpec, mounts: list[dict]) -> dict:
    """Init container: the endpoint must serve from a cluster running this deploy's image before the
    smoke checks may count (qwen2vl_serve.active_cluster)."""
    resources = {"cpu": "100m", "memory": "128Mi"}
    return {
        "name": ACTIVE_CLUSTER_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": image_pull_policy(spec.image),
        "command": [
            "python", "-m", "qwen2vl_serve.active_cluster",
            "--rayservice", f"{spec.namespace}/{spec.name}",
            "--service", spec.endpoint_service,
            "--image-env", EXPECTED_IMAGE_ENV,
            "--wait", str(wait_for_active_seconds(spec)),
        ],
        "env": [{"name": EXPECTED_IMAGE_ENV, "value": spec.image}],
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }


def smoke_job(spec: WorkloadSpec) -> dict:
    cfg = spec.cfg
    tmp_volume, tmp_mount = scratch_volume()
    credentials, credentials_mount = credentials_volume(spec, hub_token=False)
    resources = {"cpu": "500m", "memory": "512Mi"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": spec.metadata(
            smoke_job_name(spec),
            "smoke-test",
            annotations={
                **checkov_annotations(spec.image),
                "checkov.io/skip2": "CKV_K8S_38=the Job's token is needed to write its report ConfigMap; "
                "its Role allows exactly that",
            },
        ),
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": active_deadline_seconds(spec),
            "template": {
                "metadata": {"labels": spec.labels("smoke-test")},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": smoke_account_name(spec),
                    "automountServiceAccountToken": True,
                    "securityContext": pod_security_context(),
                    "initContainers": [active_cluster_check(spec, [tmp_mount])],
                    "containers": [
                        {
                            "name": "smoke",
                            "image": spec.image,
                            "imagePullPolicy": image_pull_policy(spec.image),
                            "command": [
                                "python", "-m", "qwen2vl_serve.smoke",
                                "--base-url", spec.endpoint_url,
                                "--model", cfg.served_model_name,
                                "--api-key-file", API_KEY_FILE,
                                "--concurrency", str(cfg.max_num_seqs),
                                "--wait-ready", str(WAIT_FOR_READY_SECONDS),
                                "--report", "/tmp/smoke-report.json",
                                "--report-configmap", f"{spec.namespace}/{smoke_report_name(spec)}",
                            ],
                            "resources": {"requests": dict(resources), "limits": dict(resources)},
                            "securityContext": container_security_context(),
                            "volumeMounts": [tmp_mount, credentials_mount],
                        }
                    ],
                    "volumes": [tmp_volume, credentials],
                },
            },
        },
    }
