"""Ray's in-tree autoscaler: the head's sidecar that turns Serve's replica demand into GPU worker pods,
which the cloud's node autoscaler turns into GPU nodes (and back, down to gpuNodesMin, 0 included)."""

from __future__ import annotations

from infra.config import StackConfig
from infra.workload.pods import container_security_context

# Ray's autoscaler removes a worker idle this long (its default, apis/ray/v1/raycluster_types.go:146-149).
# A worker is idle only after Serve removed its replica, which takes serve_config.DOWNSCALE_DELAY_S of low
# load first, so a longer wait here would only stack delay on delay.
IDLE_TIMEOUT_SECONDS = 60
# KubeRay's defaults for the sidecar (common/pod.go:539-548), written out so the placement check counts them.
AUTOSCALER_RESOURCES = {"cpu": "500m", "memory": "512Mi"}
TOKEN_VOLUME = "autoscaler-token"
# Where Ray 2.38's autoscaler reads its credentials, once at start
# (ray/autoscaler/_private/kuberay/node_provider.py:160-175, :252).
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The lifetime of the service-account volume Kubernetes itself injects (plugin/pkg/admission/serviceaccount/
# admission.go TokenVolumeSource): for a pod-bound token of exactly 60*60+7 s the API server, with
# --service-account-extend-token-expiration (default true since kubernetes/kubernetes#96273), issues it for a
# year (pkg/serviceaccount/claims.go WarnOnlyBoundTokenExpirationSeconds, ExpirationExtensionSeconds;
# pkg/registry/core/serviceaccount/storage/token.go), so the autoscaler, which never re-reads the file, works on.
TOKEN_EXPIRATION_SECONDS = 3607
NODE_BOUNDS_ANNOTATION = "qwen2vl.io/gpu-nodes"
RAY_LOG_DIR = "/tmp/ray"


def autoscaler_options() -> dict:
    """The sidecar runs restricted like every other container, and alone gets the API token: the head's
    Ray container (dashboard and job API) keeps automountServiceAccountToken false."""
    return {
        "idleTimeoutSeconds": IDLE_TIMEOUT_SECONDS,
        "upscalingMode": "Default",
        "resources": {"requests": dict(AUTOSCALER_RESOURCES), "limits": dict(AUTOSCALER_RESOURCES)},
        "securityContext": container_security_context(),
        # Its root filesystem is read-only; the one writable place KubeRay gives it is the log volume it
        # shares with the head at /tmp/ray (common/pod.go:26-27, :434-442).
        "env": [{"name": "HOME", "value": RAY_LOG_DIR}],
        "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True}],
    }


def autoscaler_token_volume() -> dict:
    """The head pod's service-account token, CA and namespace as kubelet would mount them; KubeRay sets the
    head's serviceAccountName to the autoscaler's account with its Role (common/pod.go:183-194)."""
    return {
        "name": TOKEN_VOLUME,
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_EXPIRATION_SECONDS}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ],
        },
    }


def node_bounds_annotation(cfg: StackConfig) -> dict:
    """KubeRay 1.4.2 neither updates a cluster whose hash is unchanged nor hashes min/maxReplicas
    (rayservice_controller.go:631-657, :1098-1111), so new bounds alone would never reach the running
    cluster. Naming them in the pod template puts them into the hash: a bounds change becomes a
    cluster-level change, handled by the stack's upgrade strategy."""
    return {NODE_BOUNDS_ANNOTATION: f"{cfg.gpu_nodes_min}-{cfg.gpu_nodes_max}"}
