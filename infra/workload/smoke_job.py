"""The smoke-inference Job that runs after the RayService is up (its checks: qwen2vl_serve.smoke)."""

from __future__ import annotations

import hashlib
import json

from infra.workload.pods import (
    API_KEY_FILE,
    checkov_annotations,
    container_security_context,
    credentials_volume,
    image_pull_policy,
    pod_security_context,
    scratch_volume,
)
from infra.workload.serve_config import vllm_server_args
from infra.workload.spec import WorkloadSpec

# Generous: the Job starts while the model may still be loading and waits for the endpoint.
ACTIVE_DEADLINE_SECONDS = 5400
WAIT_FOR_READY_SECONDS = 4800


def smoke_fingerprint(spec: WorkloadSpec) -> str:
    """Changes exactly when the image, the model or the serving config changes, so does the Job's name."""
    basis = json.dumps({"image": spec.image, "server": vllm_server_args(spec)}, sort_keys=True)
    return hashlib.sha256(basis.encode()).hexdigest()[:10]


def smoke_job_name(spec: WorkloadSpec) -> str:
    return f"{spec.name}-smoke-{smoke_fingerprint(spec)}"


def smoke_job(spec: WorkloadSpec) -> dict:
    cfg = spec.cfg
    tmp_volume, tmp_mount = scratch_volume()
    credentials, credentials_mount = credentials_volume(spec, hub_token=False)
    resources = {"cpu": "500m", "memory": "512Mi"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": spec.metadata(smoke_job_name(spec), "smoke-test", annotations=checkov_annotations(spec.image)),
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": spec.labels("smoke-test")},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(),
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
