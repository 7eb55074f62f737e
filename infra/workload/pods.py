"""Pieces every pod of the workload shares: security context, scratch volume, credentials, image policy."""

from __future__ import annotations

from infra.workload.spec import WorkloadSpec

# The image's non-root user; above 10000 so it cannot collide with a host user.
RUN_AS_USER = 10001
CREDENTIALS_PATH = "/var/run/secrets/qwen2vl"
API_KEY_FILE = f"{CREDENTIALS_PATH}/api-key"
HUB_TOKEN_FILE = f"{CREDENTIALS_PATH}/hf-token"


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


def credentials_volume(spec: WorkloadSpec, hub_token: bool) -> tuple[dict, dict]:
    """Secrets as read-only files (not environment variables, which leak into process listings and logs)."""
    sources = [{"secret": {"name": spec.api_key_secret, "items": [{"key": "api-key", "path": "api-key"}]}}]
    if hub_token:
        sources.append(
            {"secret": {"name": spec.hub_token_secret, "optional": True, "items": [{"key": "token", "path": "hf-token"}]}}
        )
    volume = {"name": "credentials", "projected": {"sources": sources, "defaultMode": 0o440}}
    return volume, {"name": "credentials", "mountPath": CREDENTIALS_PATH, "readOnly": True}


def image_pull_policy(image: str) -> str:
    """A digest names one image forever; a tag can move, so pull it each time a pod starts."""
    return "IfNotPresent" if "@sha256:" in image else "Always"


def checkov_annotations(image: str) -> dict:
    if "@sha256:" in image:
        return {}
    return {
        "checkov.io/skip1": "CKV_K8S_43=the image is referenced by tag until the stack pins a built digest "
        "(config key image); the prod policy requires a digest"
    }
