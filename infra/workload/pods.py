"""Pieces every pod of the workload shares: security context, scratch volume, credentials, image policy."""

from __future__ import annotations

from infra.workload.spec import WorkloadSpec

# The image's non-root user; above 10000 so it cannot collide with a host user.
RUN_AS_USER = 10001
CREDENTIALS_PATH = "/var/run/secrets/qwen2vl"
API_KEY_FILE = f"{CREDENTIALS_PATH}/api-key"
HUB_TOKEN_FILE = f"{CREDENTIALS_PATH}/hf-token"

# The image user's home (images/vllm/Dockerfile: useradd --create-home serve, WORKDIR /home/serve). The
# root filesystem is read-only, so it is an emptyDir (home_volume), and each library's default cache
# and config location is pointed into it by name; docs/pod.md cites where each one writes.
HOME_PATH = "/home/serve"
CACHE_HOME = f"{HOME_PATH}/.cache"
CONFIG_HOME = f"{HOME_PATH}/.config"
# What it holds: Triton's compiled kernels (a few MB per process), vLLM's P2P check result (bytes) and
# outlines' guided-decoding cache, the one that grows: it never evicts (outlines 0.0.46 caching.py:55-60,
# eviction_policy "none") and adds an entry per distinct schema, a few MB each for Qwen2's vocabulary.
HOME_SIZE = "10Gi"
WRITABLE_STATE_ENV = (
    # Path.home() and ~: triton 3.0.0 runtime/cache.py:11-20 (~/.triton/{cache,dump,override}), outlines
    # 0.0.46 caching.py:53-54, torch 2.4.0 _appdirs.py:349; the image's HOME would be on the read-only root.
    ("HOME", HOME_PATH),
    # vllm/envs.py:71-82 (cache and config roots), huggingface_hub 0.36.2 constants.py:129-135 (HF_HOME
    # where it is not set), torch 2.4.0 hub.py:132-136.
    ("XDG_CACHE_HOME", CACHE_HOME),
    ("XDG_CONFIG_HOME", CONFIG_HOME),
    # vllm/envs.py:125-145. The cache root takes the P2P access check's result on NVLink GPUs at TP > 1:
    # os.makedirs at engine start (custom_all_reduce_utils.py:195-198), fatal on a read-only root.
    ("VLLM_CACHE_ROOT", f"{CACHE_HOME}/vllm"),
    ("VLLM_CONFIG_ROOT", f"{CONFIG_HOME}/vllm"),
    # vLLM's Triton cache manager appends _<pid> per process (vllm/triton_utils/custom_cache_manager.py:45-51).
    ("TRITON_CACHE_DIR", f"{CACHE_HOME}/triton"),
    # Created when vLLM first imports outlines for a guided-decoding request (caching.py:53-60).
    ("OUTLINES_CACHE_DIR", f"{CACHE_HOME}/outlines"),
    # torch 2.4.0 _inductor/runtime/runtime_utils.py:134-143 (else /tmp/torchinductor_<user>) and
    # utils/cpp_extension.py:283-295,2030-2033 (else ~/.cache/torch_extensions): bounded here, with the rest.
    ("TORCHINDUCTOR_CACHE_DIR", f"{CACHE_HOME}/torchinductor"),
    ("TORCH_EXTENSIONS_DIR", f"{CACHE_HOME}/torch_extensions"),
    # The CUDA driver's JIT cache, default ~/.nv/ComputeCache (CUDA C++ Programming Guide, CUDA
    # Environment Variables).
    ("CUDA_CACHE_PATH", f"{CACHE_HOME}/nv/ComputeCache"),
    # No usage reports: vLLM's (envs.py:237-241, usage_lib.py:37-58; it would also write usage_stats.json
    # under VLLM_CONFIG_ROOT, usage_lib.py:216-218), Ray's (on unless "0": ray/_private/usage/usage_lib.py:349-391),
    # and the hub's telemetry (huggingface_hub constants.py:172-176 honours DO_NOT_TRACK).
    ("VLLM_NO_USAGE_STATS", "1"),
    ("DO_NOT_TRACK", "1"),
    ("RAY_USAGE_STATS_ENABLED", "0"),
)


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
    # OnRootMismatch: the kubelet re-chowns a volume only when its root's group is not fsGroup yet, not
    # every file of the model cache at every mount (the default, Always).
    return {"fsGroup": RUN_AS_USER, "fsGroupChangePolicy": "OnRootMismatch", "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"}}


def scratch_volume() -> tuple[dict, dict]:
    """A writable /tmp (Ray's session dir, Python caches) on an otherwise read-only root filesystem."""
    return {"name": "tmp", "emptyDir": {"sizeLimit": "20Gi"}}, {"name": "tmp", "mountPath": "/tmp"}


def home_volume() -> tuple[dict, dict]:
    """The user's home as an emptyDir: every cache and config directory below is in it (see
    WRITABLE_STATE_ENV). The kubelet evicts the pod if it outgrows HOME_SIZE."""
    return {"name": "home", "emptyDir": {"sizeLimit": HOME_SIZE}}, {"name": "home", "mountPath": HOME_PATH}


def writable_state_env() -> list[dict]:
    """The environment every container of the workload gets (Ray head and worker, whose env KubeRay's
    wait-gcs-ready init container copies, the model-fetch init container, the smoke Job)."""
    return [{"name": name, "value": value} for name, value in WRITABLE_STATE_ENV]


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
