"""What a head restart costs. Without GCS fault tolerance a new head has no Serve state: KubeRay finds
no application and resubmits it ("the head Pod crashed and GCS FT was not enabled",
rayservice_controller.go:804-809), and the workers, which lost the GCS, restart, so the model reloads.
With an external Redis the GCS state survives and KubeRay gives the workers 600 s to reconnect
(common/pod.go:89-97), so a head restart leaves the replicas serving."""

from __future__ import annotations

from infra.config import StackConfig
from infra.nodepool import replicas_per_node
from infra.workload.spec import WorkloadSpec

REDIS_PASSWORD_KEY = "password"


def gcs_fault_tolerance(cfg: StackConfig) -> dict | None:
    """KubeRay 1.4's gcsFaultToleranceOptions (apis/ray/v1/raycluster_types.go:49-66); the password comes
    from a Secret, never from the spec (KubeRay refuses redis-password in rayStartParams alongside it,
    utils/validation.go:61-65)."""
    if cfg.gcs_redis_address is None:
        return None
    options: dict = {"redisAddress": cfg.gcs_redis_address}
    if cfg.gcs_redis_password_secret is not None:
        options["redisPassword"] = {"valueFrom": {"secretKeyRef": {
            "name": cfg.gcs_redis_password_secret, "key": REDIS_PASSWORD_KEY}}}
    return options


def worker_disruption_budget(spec: WorkloadSpec) -> dict | None:
    """A PodDisruptionBudget only where it cannot block a node drain: with at least two workers at the
    floor, one may go while the others serve. With one worker (every stack today) any budget that
    protects it would block drains (node upgrades, scale-down) until someone deletes it; the head needs
    none, since with GCS fault tolerance its restart costs seconds, and without it a budget would not
    make the restart cheaper."""
    if spec.cfg.gpu_nodes_min < 2:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": spec.metadata(f"{spec.name}-gpu-workers", "disruption-budget"),
        "spec": {
            # A drained node takes all its workers (GPUs / TP of them) at once.
            "maxUnavailable": replicas_per_node(spec.cfg),
            "selector": {"matchLabels": spec.labels("ray-gpu-worker")},
        },
    }
