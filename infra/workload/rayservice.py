"""The RayService: a head pod and GPU workers, one per Serve replica, each running vLLM on TP GPUs of its node.

A node of N GPUs holds N / TP workers. One worker pod per replica, rather than one pod holding several
replicas: each replica's vLLM server opens its own metrics port (VLLM_METRICS_PORT) and /dev/shm for NCCL,
which two replicas in one pod would share; and Ray 2.38's autoscaler scales a worker group by pods for
pending resource demands (ray/autoscaler/_private/kuberay/node_provider.py), so a replica's TP GPUs are one
pod's nvidia.com/gpu request, which the device plugin hands out per pod, and the cloud's node autoscaler adds
a node only when a worker pod does not fit the nodes there are."""

from __future__ import annotations

from infra import pins
from infra.workload.model_source import model_fetch_init_container, model_lock_volume, vllm_model_env
from infra.workload.pods import (
    container_security_context,
    credentials_volume,
    home_volume,
    image_pull_policy,
    pod_security_context,
    scratch_volume,
    writable_state_env,
)
from infra.workload.pod_deletion import TERMINATION_GRACE_SECONDS, drain_env, head_lifecycle, worker_lifecycle
from infra.workload.serve_config import serve_config_yaml, worker_bounds
from infra.workload.network import serve_service
from infra.workload.autoscaling import autoscaler_options, autoscaler_token_volume, node_bounds_annotation
from infra.workload.head_recovery import gcs_fault_tolerance
from infra.workload.storage import MODEL_VOLUME, model_volume
from infra.workload.upgrade import IMAGE_CHANGE_ANNOTATION, image_change_cost, upgrade_strategy
from infra.nodepool import GPU_RESOURCE, GPU_TAINT, worker_share
from infra.workload.priority import priority_class_name
from infra.workload.spec import (
    DASHBOARD_PORT,
    MODEL_CACHE_PATH,
    RAY_METRICS_PORT,
    SERVE_PORT,
    VLLM_METRICS_PORT,
    WorkloadSpec,
)

# NCCL moves tensor-parallel activations through /dev/shm between the node's GPUs; the container
# runtime's default 64 MiB makes it fail at the first all-reduce. A TP-1 replica runs no NCCL: the object
# store alone needs room.
SHM_SIZE = "16Gi"
SINGLE_GPU_SHM_SIZE = "4Gi"
# The head runs no replica (num-cpus 0), only the GCS, the dashboard, the Serve controller and a proxy;
# KubeRay's LLM samples give it 2 CPU (v1.4.2 ray-operator/config/samples/ray-service.llm-serve.yaml:54-59)
# and 2 CPU / 8G (samples/vllm/ray-service.vllm-tpu-v6e-singlehost.yaml:46-52). It must fit a system node
# (4 vCPU / 16 GiB by default) after the cloud's reservations and the add-ons: docs/pod.md has the figures.
# Memory limit = request, so the kubelet never picks the GCS first under memory pressure; no CPU limit,
# so it may use a node's idle CPU (Ray's CPU count is set by num-cpus, not derived from a limit).
HEAD_CPU = "2"
HEAD_MEMORY = "8Gi"
# Ray's object store, set rather than 30% of the pod's memory (ray/_private/resource_spec.py:232-260):
# this app passes requests and responses, not large objects, and on the worker /dev/shm is shared with
# NCCL and vLLM's shared-memory broadcast, which need most of SHM_SIZE.
OBJECT_STORE_BYTES = 2 * 1024**3
HEAD_SHM_SIZE = "3Gi"

# Ray writes its processes' output, the Serve replica's and so vLLM's among them, to files under /tmp/ray
# unless this is set (ray/_private/node.py:833-843, ray_constants.py:234); then it reaches the
# container's stderr, where `kubectl logs` and the cluster's log agent read it
# (https://docs.ray.io/en/latest/cluster/kubernetes/user-guides/logging.html).
RAY_LOGS_TO_STDERR = ({"name": "RAY_LOG_TO_STDERR", "value": "1"},)


def _ports() -> list[dict]:
    return [
        {"name": "serve", "containerPort": SERVE_PORT},
        {"name": "metrics", "containerPort": RAY_METRICS_PORT},
    ]


def _metrics_annotations() -> dict:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(RAY_METRICS_PORT)}


def _head_group(spec: WorkloadSpec) -> dict:
    tmp_volume, tmp_mount = scratch_volume()
    home, home_mount = home_volume()
    dshm_mount = {"name": "dshm", "mountPath": "/dev/shm"}
    return {
        "rayStartParams": {
            "dashboard-host": "0.0.0.0",
            # Keep Serve replicas (and their GPU requests) off the CPU-only head.
            "num-cpus": "0",
            "num-gpus": "0",
            "metrics-export-port": str(RAY_METRICS_PORT),
            "object-store-memory": str(OBJECT_STORE_BYTES),
        },
        "template": {
            "metadata": {"labels": spec.labels("ray-head"), "annotations": _metrics_annotations()},
            "spec": {
                "securityContext": pod_security_context(),
                "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                "priorityClassName": priority_class_name(spec),
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "ray-head",
                        "image": spec.image,
                        "imagePullPolicy": image_pull_policy(spec.image),
                        "ports": _ports()
                        + [
                            {"name": "gcs", "containerPort": 6379},
                            {"name": "dashboard", "containerPort": DASHBOARD_PORT},
                            {"name": "client", "containerPort": 10001},
                        ],
                        "resources": {"requests": {"cpu": HEAD_CPU, "memory": HEAD_MEMORY},
                                      "limits": {"memory": HEAD_MEMORY}},
                        "env": [*writable_state_env(), *RAY_LOGS_TO_STDERR],
                        "lifecycle": head_lifecycle(),
                        "securityContext": container_security_context(),
                        "volumeMounts": [tmp_mount, home_mount, dshm_mount],
                    }
                ],
                "volumes": [tmp_volume, home,
                            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": HEAD_SHM_SIZE}},
                            autoscaler_token_volume()],
            },
        },
    }


def _worker_group(spec: WorkloadSpec) -> dict:
    cfg = spec.cfg
    share = worker_share(cfg)
    gpus = str(share.gpus)
    resources = {"cpu": str(share.cpu), "memory": f"{share.memory_gib}Gi", GPU_RESOURCE: gpus}
    workers_min, workers_max = worker_bounds(cfg)
    tmp_volume, tmp_mount = scratch_volume()
    home, home_mount = home_volume()
    credentials, credentials_mount = credentials_volume(spec, hub_token=True)
    dshm_mount = {"name": "dshm", "mountPath": "/dev/shm"}
    cache_mount = {"name": MODEL_VOLUME, "mountPath": MODEL_CACHE_PATH}
    group = {
        "groupName": "gpu",
        # Ray's autoscaler owns `replicas` between the bounds (GPUs / TP workers per GPU node, one Serve
        # replica per worker); KubeRay leaves all three out of its cluster hash (rayservice_controller.go:1098-1111).
        "replicas": workers_min,
        "minReplicas": workers_min,
        "maxReplicas": workers_max,
        "rayStartParams": {"num-gpus": gpus, "metrics-export-port": str(RAY_METRICS_PORT),
                           "object-store-memory": str(OBJECT_STORE_BYTES)},
        "template": {
            "metadata": {"labels": spec.labels("ray-gpu-worker"),
                         "annotations": {**_metrics_annotations(), **node_bounds_annotation(cfg)}},
            "spec": {
                "securityContext": pod_security_context(),
                "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                "priorityClassName": priority_class_name(spec),
                "automountServiceAccountToken": False,
                "nodeSelector": dict(spec.placement.node_selector),
                "tolerations": [{**{k: GPU_TAINT[k] for k in ("key", "effect")}, "operator": "Exists"}],
                "containers": [
                    {
                        "name": "ray-worker",
                        "image": spec.image,
                        "imagePullPolicy": image_pull_policy(spec.image),
                        "ports": _ports() + [{"name": "vllm-metrics", "containerPort": VLLM_METRICS_PORT}],
                        "resources": {"requests": dict(resources), "limits": dict(resources)},
                        "env": [
                            # vLLM's TP workers must not fork a process that already initialised CUDA.
                            {"name": "VLLM_WORKER_MULTIPROC_METHOD", "value": "spawn"},
                            *writable_state_env(),
                            *RAY_LOGS_TO_STDERR,
                            *vllm_model_env(spec),
                            *drain_env(),
                        ],
                        "lifecycle": worker_lifecycle(),
                        "securityContext": container_security_context(),
                        "volumeMounts": [tmp_mount, home_mount, credentials_mount, dshm_mount, cache_mount],
                    }
                ],
                "volumes": [
                    tmp_volume,
                    home,
                    credentials,
                    {"name": "dshm", "emptyDir": {"medium": "Memory",
                                                  "sizeLimit": SHM_SIZE if share.gpus > 1 else SINGLE_GPU_SHM_SIZE}},
                    model_volume(spec),
                    *filter(None, [model_lock_volume(spec)]),
                ],
            },
        },
    }
    fetch = model_fetch_init_container(spec, [tmp_mount, home_mount, credentials_mount, cache_mount])
    if fetch:
        group["template"]["spec"]["initContainers"] = [fetch]
    return group


def _cluster(spec: WorkloadSpec) -> dict:
    cluster = {
        "rayVersion": pins.RAY_VERSION,
        # Ray's autoscaler (a sidecar of the head) adds and removes GPU workers as Serve asks for replicas.
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": autoscaler_options(),
        "headGroupSpec": _head_group(spec),
        "workerGroupSpecs": [_worker_group(spec)],
    }
    fault_tolerance = gcs_fault_tolerance(spec.cfg)
    if fault_tolerance:
        cluster["gcsFaultToleranceOptions"] = fault_tolerance
    return cluster


def rayservice(spec: WorkloadSpec) -> dict:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        # What a cluster-level change costs here, for `kubectl describe` and the plan's summary.
        "metadata": spec.metadata(spec.name, "rayservice",
                                  annotations={IMAGE_CHANGE_ANNOTATION: image_change_cost(spec.cfg)}),
        "spec": {
            # Chosen from the GPU pool's capacity (upgrade.py); unset would mean NewCluster.
            "upgradeStrategy": {"type": upgrade_strategy(spec.cfg)},
            # The endpoint: KubeRay's serve Service, which selects only the active cluster's pods.
            "serveService": serve_service(spec),
            "serveConfigV2": serve_config_yaml(spec),
            "rayClusterConfig": _cluster(spec),
        },
    }
