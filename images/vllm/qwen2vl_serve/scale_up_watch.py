"""Why a GPU worker stays Pending, as the node autoscaler says it, so the smoke gate fails in minutes naming
the cause instead of waiting out its whole window (standard library only; runs in the smoke Job's init
container next to active_cluster.py, on the same service-account client).

What the autoscalers record on a pod they cannot help:
- NotTriggerScaleUp (Cluster Autoscaler, kubernetes/autoscaler cluster-autoscaler/FAQ.md, "What events are
  emitted by CA?"): no node group can be scaled up for the pod. When the reason is "in backoff after failed
  scale-up" (CA's BackoffReason, processors/status skipped reasons), the cloud refused the group's last
  scale-up: on EKS the Auto Scaling group could not launch the instance (no vCPU quota for the family,
  InsufficientInstanceCapacity), and CA backs off for up to 30 minutes (FAQ, "What happens in scale-up when I
  have no more quota"). That ends the wait at once. Any other reason (max size reached, a selector or taint no
  group has) is recorded on every loop while it lasts, also for a moment while a new group is discovered, so
  it counts once it has lasted NOT_TRIGGERED_PATIENCE_S.
- FailedScaleUp (GKE's autoscaler): "Node scale up in zones ... associated with this pod failed: GCE out of
  resources" (a stockout), or a GPU quota exceeded. That ends the wait at once.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from datetime import datetime

from qwen2vl_serve.kube_client import KubeApi

SCALE_UP_FAILED = "FailedScaleUp"
NOT_TRIGGERED = "NotTriggerScaleUp"
BACKOFF = "in backoff after failed scale-up"
NOT_TRIGGERED_PATIENCE_S = 300.0
# KubeRay labels every worker pod ray.io/node-type=worker (ray-operator/controllers/ray/utils/constant.go).
WORKER_SELECTOR = "ray.io/node-type=worker"


@dataclass(frozen=True)
class ScaleUpFailure:
    pod: str
    reason: str
    message: str

    def describe(self) -> str:
        return (f"the node autoscaler cannot add a node for worker pod {self.pod}: {self.reason}: {self.message} "
                "(request quota or capacity, or change gpuType/region; docs/clusters/)")


def _seconds(event: dict, key: str) -> float | None:
    stamp = event.get(key)
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None


def _lasted(event: dict) -> float:
    first, last = _seconds(event, "firstTimestamp"), _seconds(event, "lastTimestamp")
    return last - first if first is not None and last is not None else 0.0


def pending_workers(api: KubeApi, namespace: str, selector: str = WORKER_SELECTOR) -> list[str]:
    query = urllib.parse.urlencode({"labelSelector": selector, "fieldSelector": "status.phase=Pending"})
    return sorted(pod["metadata"]["name"] for pod in api.get(f"/api/v1/namespaces/{namespace}/pods?{query}")["items"])


def scale_up_failure(api: KubeApi, namespace: str, selector: str = WORKER_SELECTOR) -> ScaleUpFailure | None:
    """The first Pending worker's autoscaler verdict that it will not get a node, or None."""
    for pod in pending_workers(api, namespace, selector):
        query = urllib.parse.urlencode({"fieldSelector": f"involvedObject.kind=Pod,involvedObject.name={pod}"})
        events = api.get(f"/api/v1/namespaces/{namespace}/events?{query}")["items"]
        for event in sorted(events, key=lambda e: e.get("lastTimestamp") or ""):
            reason = event.get("reason")
            failed = reason == SCALE_UP_FAILED or (reason == NOT_TRIGGERED and BACKOFF in event.get("message", ""))
            if failed or (reason == NOT_TRIGGERED and _lasted(event) >= NOT_TRIGGERED_PATIENCE_S):
                return ScaleUpFailure(pod, reason, event.get("message", "").strip())
    return None


def watcher(api: KubeApi, namespace: str):
    """What the smoke gate's wait calls on each look: a reason to stop waiting, or None (also when the
    API cannot be read: this watch only ever shortens the wait)."""
    def verdict() -> str | None:
        try:
            failure = scale_up_failure(api, namespace)
        except (OSError, KeyError, ValueError):
            return None
        return failure.describe() if failure else None
    return verdict
