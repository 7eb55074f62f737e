"""Pieces every pod of the workload shares: security context, scratch volumes, secret env vars."""

from __future__ import annotations

from infra.workload.spec import WorkloadSpec

RUN_AS_USER = 1000  # the image's non-root user


def container_security_context() -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict:
    return {"fsGroup": RUN_AS_USER, "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def scratch_volume() -> tuple[dict, dict]:
    """A writable /tmp (Ray's session dir, Python caches) on an otherwise read-only root filesystem."""
    return {"name": "tmp", "emptyDir": {"sizeLimit": "20Gi"}}, {"name": "tmp", "mountPath": "/tmp"}


def secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict:
    ref = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def api_key_env(spec: WorkloadSpec, name: str = "VLLM_API_KEY") -> dict:
    return secret_env(name, spec.api_key_secret, "api-key")
