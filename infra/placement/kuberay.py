"""The pods KubeRay 1.4.2 creates for our RayService, read from its source
(github.com/ray-project/kuberay, ray-operator/ at tag v1.4.2):

- Head: the headGroupSpec template (common/pod.go DefaultHeadPodTemplate). With
  spec.rayClusterConfig.enableInTreeAutoscaling it appends the `autoscaler` container
  (pod.go:180-194, BuildAutoscalerContainer pod.go:500-550: requests = limits = 500m CPU / 512Mi),
  whose resources autoscalerOptions.resources replaces (mergeAutoscalerOverrides, pod.go:554-558).
- Workers: per worker group, GetWorkerGroupDesiredReplicas (utils/util.go:334-355): replicas clamped
  to [minReplicas, maxReplicas] (max wins when min > max), times numOfHosts, 0 when suspended. Each
  gets the `wait-gcs-ready` init container (pod.go:253-306) with requests = limits = 200m / 256Mi,
  unless the operator runs with ENABLE_INIT_CONTAINER_INJECTION=false (pod.go:229-234).
- Upgrades (controllers/ray/rayservice_controller.go isZeroDowntimeUpgradeEnabled, lines 468-491):
  spec.upgradeStrategy.type NewCluster, or no type and the operator's ENABLE_ZERO_DOWNTIME not
  "false", prepares a second, pending RayCluster beside the active one for any change to
  rayClusterConfig; it holds both until the new one serves. Type None creates no second cluster.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache

import yaml

from infra.placement.clouds import FAST_LOADER
from infra.placement.quantity import amount

WAIT_GCS_READY = {"name": "wait-gcs-ready",
                  "resources": {"requests": {"cpu": "200m", "memory": "256Mi"},
                                "limits": {"cpu": "200m", "memory": "256Mi"}}}
AUTOSCALER = {"name": "autoscaler",
              "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                            "limits": {"cpu": "500m", "memory": "512Mi"}}}
NEW_CLUSTER = "NewCluster"


@dataclass(frozen=True)
class RayPod:
    name: str  # e.g. qwen2vl/head, qwen2vl/gpu-worker-0
    role: str  # head | worker
    group: str
    pod_spec: dict


def _env(operator_env: list[dict] | None, name: str) -> str | None:
    return next((e.get("value") for e in operator_env or [] if e.get("name") == name), None)


def head_pod(cluster: dict, prefix: str) -> RayPod:
    spec = copy.deepcopy(cluster["headGroupSpec"]["template"]["spec"])
    if cluster.get("enableInTreeAutoscaling"):
        autoscaler = copy.deepcopy(AUTOSCALER)
        override = (cluster.get("autoscalerOptions") or {}).get("resources")
        if override is not None:
            autoscaler["resources"] = copy.deepcopy(override)
        spec["containers"].append(autoscaler)
    return RayPod(f"{prefix}/head", "head", "head", spec)


def desired_workers(group: dict) -> int:
    if group.get("suspend"):
        return 0
    low, high = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1)
    replicas = group.get("replicas")
    if low > high:
        count = high
    elif replicas is None or replicas < low:
        count = low
    else:
        count = min(replicas, high)
    return count * group.get("numOfHosts", 1)


def worker_pods(cluster: dict, prefix: str, operator_env: list[dict] | None = None,
                replicas_of=desired_workers) -> list[RayPod]:
    inject = (_env(operator_env, "ENABLE_INIT_CONTAINER_INJECTION") or "").lower() != "false"
    pods = []
    for group in cluster.get("workerGroupSpecs", []):
        for index in range(replicas_of(group)):
            spec = copy.deepcopy(group["template"]["spec"])
            if inject:
                spec["initContainers"] = [*spec.get("initContainers", []), copy.deepcopy(WAIT_GCS_READY)]
            pods.append(RayPod(f"{prefix}/{group['groupName']}-worker-{index}", "worker", group["groupName"], spec))
    return pods


@lru_cache(maxsize=8)
def _parse_serve_config(text: str) -> dict:
    return yaml.load(text, Loader=FAST_LOADER) or {}


def serve_config_of(rayservice: dict) -> dict:
    """serveConfigV2 as data (read-only: parsed once per distinct text)."""
    return _parse_serve_config(rayservice["spec"].get("serveConfigV2") or "{}")


def cluster_pods(rayservice: dict, prefix: str, operator_env: list[dict] | None = None,
                 at_serve_max: bool = False) -> list[RayPod]:
    """The cluster's pods with Serve at its initial replicas (a new cluster), or at its maximum (the
    active cluster under load: the Ray autoscaler raises the worker group's replicas to what Serve's
    replicas need, and an upgrade's second cluster must fit beside that)."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    serve_config = serve_config_of(rayservice)
    return [head_pod(cluster, prefix),
            *worker_pods(cluster, prefix, operator_env, workers_to_place(cluster, serve_config, at_serve_max))]


def upgrade_strategy(rayservice: dict, operator_env: list[dict] | None = None) -> str:
    """NewCluster or None, as KubeRay 1.4.2 decides it for this RayService."""
    declared = ((rayservice["spec"].get("upgradeStrategy") or {}).get("type"))
    if declared is not None:
        return NEW_CLUSTER if declared == NEW_CLUSTER else str(declared)
    return "None" if (_env(operator_env, "ENABLE_ZERO_DOWNTIME") or "").lower() == "false" else NEW_CLUSTER


def serve_gpu_demand(serve_config: dict) -> list[tuple[str, int, float]]:
    """(deployment, most replicas Serve may run, GPUs per replica) per deployment of serveConfigV2."""
    demand = []
    for app in serve_config.get("applications", []):
        for deployment in app.get("deployments", []):
            autoscaling = deployment.get("autoscaling_config") or {}
            replicas = autoscaling.get("max_replicas", deployment.get("num_replicas", 1))
            if replicas == "auto":
                replicas = autoscaling.get("max_replicas", 100)
            gpus = float((deployment.get("ray_actor_options") or {}).get("num_gpus", 0))
            demand.append((f"{app.get('name')}/{deployment.get('name')}", int(replicas), gpus))
    return demand


def serve_initial_replicas(serve_config: dict) -> list[tuple[int, float]]:
    """(replicas Serve starts with, GPUs per replica) per deployment: num_replicas, or under autoscaling
    initial_replicas, else min_replicas (Ray 2.38 serve/config.py AutoscalingConfig); at least one, since
    the smoke test needs a replica to answer."""
    rows = []
    for app in serve_config.get("applications", []):
        for deployment in app.get("deployments", []):
            autoscaling = deployment.get("autoscaling_config") or {}
            if autoscaling:
                start = autoscaling.get("initial_replicas")
                start = autoscaling.get("min_replicas", 1) if start is None else start
            else:
                start = deployment.get("num_replicas", 1)
            gpus = float((deployment.get("ray_actor_options") or {}).get("num_gpus", 0))
            rows.append((max(1, int(start)), gpus))
    return rows


def workers_to_place(cluster: dict, serve_config: dict, at_serve_max: bool = False):
    """How many workers of a group exist once Serve's first (or, `at_serve_max`, its most) replicas are
    placed: the group's desired count, raised by the in-tree autoscaler (enableInTreeAutoscaling) to
    what those replicas' GPUs need, up to maxReplicas."""
    rows = ([(replicas, gpus) for _, replicas, gpus in serve_gpu_demand(serve_config)] if at_serve_max
            else serve_initial_replicas(serve_config))
    gpus_needed = sum(replicas * gpus for replicas, gpus in rows)

    def count(group: dict) -> int:
        desired = desired_workers(group)
        if not cluster.get("enableInTreeAutoscaling") or not gpus_needed:
            return desired
        per_worker = next((g for name, _, g in worker_ray_gpus(cluster) if name == group["groupName"]), 0)
        if not per_worker:
            return desired
        needed = -(-int(gpus_needed) // per_worker)
        return max(desired, min(needed, group.get("maxReplicas", needed)))

    return count


def worker_ray_gpus(cluster: dict) -> list[tuple[str, int, int]]:
    """(group, most workers, Ray GPUs per worker): num-gpus from rayStartParams, else the container's
    nvidia.com/gpu limit, which KubeRay passes to `ray start` (common/pod.go generateRayStartCommand)."""
    groups = []
    for group in cluster.get("workerGroupSpecs", []):
        params = group.get("rayStartParams") or {}
        if "num-gpus" in params:
            gpus = int(float(params["num-gpus"]))
        else:
            limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
            gpus = amount("nvidia.com/gpu", limits.get("nvidia.com/gpu", 0))
        most = group.get("maxReplicas", 0) if cluster.get("enableInTreeAutoscaling") else desired_workers(group)
        groups.append((group["groupName"], most, gpus))
    return groups
