"""Where the worker gets the model: fetched and verified against the lock by an init container, or
(without a resolved lock) downloaded by vLLM itself by revision; from the hub, a mirror or ModelScope."""

from __future__ import annotations

import json

from infra.workload.pods import HUB_TOKEN_FILE, container_security_context, image_pull_policy, writable_state_env
from infra.workload.spec import MODEL_CACHE_PATH, WorkloadSpec

LOCK_MOUNT = "/etc/qwen2vl"
LOCK_FILE = "model.lock.json"


def fetches_locked_files(spec: WorkloadSpec) -> bool:
    """An init container fetches the locked files (unless the image already carries them)."""
    return spec.model_lock is not None and spec.cfg.model_source == "huggingface" and not spec.cfg.bake_model


def hub_env(spec: WorkloadSpec) -> list[dict]:
    env = [{"name": "HF_HOME", "value": f"{MODEL_CACHE_PATH}/huggingface"},
           {"name": "HF_TOKEN_PATH", "value": HUB_TOKEN_FILE}]
    if spec.cfg.hub_endpoint:
        env.append({"name": "HF_ENDPOINT", "value": spec.cfg.hub_endpoint})
    return env


def vllm_model_env(spec: WorkloadSpec) -> list[dict]:
    env = hub_env(spec)
    if spec.cfg.model_source == "modelscope":
        env.append({"name": "VLLM_USE_MODELSCOPE", "value": "True"})
    if spec.model_lock is not None and spec.cfg.model_source == "huggingface":
        # Everything is on disk and verified (fetched at start or baked in); vLLM must not reach for the hub.
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    return env


def model_lock_config_map(spec: WorkloadSpec) -> dict | None:
    if not fetches_locked_files(spec):
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": spec.metadata(spec.model_lock_config_map, "model-lock"),
        "data": {LOCK_FILE: json.dumps(spec.model_lock, indent=2, sort_keys=True)},
    }


def model_fetch_init_container(spec: WorkloadSpec, mounts: list[dict]) -> dict | None:
    """Downloads exactly the locked files at the locked commit and verifies size and sha256; a mismatch
    stops the pod here, before vLLM could serve a corrupt download."""
    if not fetches_locked_files(spec):
        return None
    resources = {"cpu": "2", "memory": "4Gi"}
    return {
        "name": "model-fetch",
        "image": spec.image,
        "imagePullPolicy": image_pull_policy(spec.image),
        "command": ["python", "-m", "qwen2vl_serve.model_files", "fetch", "--lock", f"{LOCK_MOUNT}/{LOCK_FILE}",
                    "--dir", spec.model_dir, "--token-file", HUB_TOKEN_FILE],
        "env": [*writable_state_env(), *hub_env(spec)],
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": container_security_context(),
        "volumeMounts": [*mounts, {"name": "model-lock", "mountPath": LOCK_MOUNT, "readOnly": True}],
    }


def model_lock_volume(spec: WorkloadSpec) -> dict | None:
    if not fetches_locked_files(spec):
        return None
    return {"name": "model-lock", "configMap": {"name": spec.model_lock_config_map}}
