"""The node pools, described once: shape, labels, taint, size. The cluster modules create them, the
workload builders place pods on them, and the placement check simulates the scheduler over them; none
of those imports another for these facts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from infra.config import ConfigError, StackConfig
from infra.catalog import InstanceShape, catalog_path, instance_shape, instance_type, node_shape_for
from infra.catalog.gpu_zones import gpu_zones, gpu_zones_read_on

GPU_RESOURCE = "nvidia.com/gpu"
# The node pool's taint and the workload's toleration are this one definition.
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
GPU_POOL_LABEL = "qwen2vl.io/gpu-pool"
GPU_TYPE_LABEL = "qwen2vl.io/gpu-type"
# The pinned nvidia-device-plugin chart (infra/pins.py) runs its DaemonSet only on nodes with one of three labels
# (values.yaml `affinity`, required terms: feature.node.kubernetes.io/pci-10de.present=true,
# feature.node.kubernetes.io/cpu-model.vendor_id=NVIDIA, nvidia.com/gpu.present=true). Only NFD/GFD set
# them, and the chart leaves those off (gfd.enabled: false); so every GPU pool carries the third itself.
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
# Cluster Autoscaler's AWS provider knows a GPU node by this label (cluster-autoscaler/cloudprovider/aws/
# aws_cloud_provider.go GPULabel, CA 1.35.0). Without it a new GPU node whose device plugin has not yet
# advertised nvidia.com/gpu counts as ready, the pod still looks unschedulable, and CA adds another GPU node
# (cloudprovider/aws/README.md, "Special note on GPU instances"). At zero nodes CA reads a managed node group's
# labels through eks:DescribeNodegroup (aws_wrapper.go getManagedNodegroupInfo copies Nodegroup.Labels, and
# aws_manager.go puts them on the template node), so its scale-from-zero template has the label too.
# The value is free-form (CA checks only that the label is there); ours follows the README's nvidia-tesla-k80.
CLOUD_GPU_LABELS = {"aws": "k8s.amazonaws.com/accelerator"}
POOL_NAME = "gpu"
SYSTEM_POOL_NAME = "system"
# The system pool's default shape per cloud (config key systemInstanceType overrides it).
SYSTEM_INSTANCE_DEFAULTS = {"aws": "m6i.xlarge", "gcp": "e2-standard-4"}
# Room for the serving image (~15 GB), container layers being unpacked, and logs; the model itself
# lives on the cache volume.
GPU_NODE_DISK_GB = 200


@dataclass(frozen=True)
class GpuPlacement:
    """How GPU pods find the GPU pool: the pool's node labels; its taint is GPU_TAINT."""

    node_selector: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_pool(cls, pool_name: str, gpu_type: str) -> "GpuPlacement":
        return cls({GPU_POOL_LABEL: pool_name, GPU_TYPE_LABEL: gpu_type})


@dataclass(frozen=True)
class GpuPoolSpec:
    name: str
    shape: InstanceShape | None  # None on an existing cluster
    min_nodes: int
    max_nodes: int
    spot: bool
    labels: dict[str, str]
    taint: dict[str, str]
    disk_gb: int
    tags: dict[str, str]
    # Labels the cloud's own autoscaler reads (CLOUD_GPU_LABELS), on the nodes only.
    cloud_labels: dict[str, str] = field(default_factory=dict)

    @property
    def placement(self) -> GpuPlacement:
        return GpuPlacement(dict(self.labels))

    @property
    def node_labels(self) -> dict[str, str]:
        """The labels the cloud puts on each GPU node: the placement labels, GPU_PRESENT_LABEL, cloud_labels."""
        return {**self.labels, GPU_PRESENT_LABEL: "true", **self.cloud_labels}

    def cloud_taint(self) -> dict[str, str]:
        """The taint in the EKS and GKE APIs' spelling (NO_SCHEDULE for Kubernetes' NoSchedule)."""
        effect = re.sub(r"(?<!^)(?=[A-Z])", "_", self.taint["effect"]).upper()
        return {"key": self.taint["key"], "value": self.taint["value"], "effect": effect}


def node_shape(cfg: StackConfig) -> InstanceShape | None:
    """The GPU pool's shape: gpuInstanceType, else the catalog's smallest shape of gpuType whose GPU count is a
    multiple of tensorParallelSize (infra/config.py refuses a stack that has neither)."""
    if cfg.cloud == "existing":
        return None
    if cfg.gpu_instance_type:
        return instance_shape(cfg.cloud, cfg.gpu_instance_type)
    return node_shape_for(cfg.gpu_type, cfg.cloud, cfg.tensor_parallel_size)


# A GPU worker's CPU and memory: a share of its node, at most these (what a 4-GPU node's one worker always
# had), leaving a quarter of the node to the kubelet's reservations and the DaemonSets.
WORKER_CPU_MAX = 16
WORKER_MEMORY_GIB_MAX = 128
WORKER_NODE_SHARE = 0.75


@dataclass(frozen=True)
class WorkerShare:
    """What each GPU worker pod (one model replica) requests on its node."""

    gpus: int
    cpu: int
    memory_gib: int


def worker_share(cfg: StackConfig) -> WorkerShare:
    """One worker per replica: TP GPUs, and an even share of the node's CPU and memory. On an existing cluster
    (node shapes unknown) the caps."""
    shape = node_shape(cfg)
    if shape is None:
        return WorkerShare(cfg.tensor_parallel_size, WORKER_CPU_MAX, WORKER_MEMORY_GIB_MAX)
    node = instance_type(cfg.cloud, shape.instance)
    replicas = replicas_per_node(cfg)
    return WorkerShare(
        gpus=cfg.tensor_parallel_size,
        cpu=max(1, min(WORKER_CPU_MAX, int(node.vcpus * WORKER_NODE_SHARE) // replicas)),
        memory_gib=max(1, min(WORKER_MEMORY_GIB_MAX, int(node.memory_gib * WORKER_NODE_SHARE) // replicas)),
    )


def replicas_per_node(cfg: StackConfig) -> int:
    """Model replicas on one GPU node: its GPUs over the TP size (one on an existing cluster, whose node shapes
    the stack does not know)."""
    shape = node_shape(cfg)
    return shape.gpus // cfg.tensor_parallel_size if shape else 1


def gpu_pool_spec(cfg: StackConfig) -> GpuPoolSpec:
    placement = GpuPlacement.for_pool(POOL_NAME, cfg.gpu_type)
    return GpuPoolSpec(
        name=POOL_NAME,
        shape=node_shape(cfg),
        min_nodes=cfg.gpu_nodes_min,
        max_nodes=cfg.gpu_nodes_max,
        spot=cfg.spot,
        labels=dict(placement.node_selector),
        taint=dict(GPU_TAINT),
        disk_gb=GPU_NODE_DISK_GB,
        tags=cfg.labels,
        cloud_labels={label: f"nvidia-{cfg.gpu_type.lower()}" for cloud, label in CLOUD_GPU_LABELS.items()
                      if cloud == cfg.cloud},
    )


@dataclass(frozen=True)
class SystemPoolSpec:
    """The untainted pool for everything that needs no GPU: the Ray head, operators, cluster add-ons."""

    name: str
    instance: str | None  # None on an existing cluster
    min_nodes: int
    max_nodes: int
    tags: dict[str, str]


# GKE's system pool: one node in each of the GPU pool's zones. Regional like the cluster, so the Ray head
# and the operator survive a zone outage; and a second node gives an upgrade's second Ray head room.
SYSTEM_NODES_PER_ZONE = 1


def system_pool_nodes(cfg: StackConfig) -> int:
    """How many system nodes run: on GKE node_count is per zone ("In regional or multi-zonal clusters, this
    is the number of nodes per zone", pulumi_gcp 10.2.0 container/node_pool.py), and clusters/gcp.py puts
    the pool in the GPU pool's zones; elsewhere the pool's minimum."""
    if cfg.cloud == "gcp":
        return SYSTEM_NODES_PER_ZONE * len(gpu_pool_zones(cfg))
    return system_pool_spec(cfg).min_nodes


def system_pool_spec(cfg: StackConfig) -> SystemPoolSpec:
    instance = cfg.system_instance_type or SYSTEM_INSTANCE_DEFAULTS.get(cfg.cloud)
    return SystemPoolSpec(name=SYSTEM_POOL_NAME, instance=instance, min_nodes=1, max_nodes=2, tags=cfg.labels)


def gpu_pool_zones(cfg: StackConfig) -> tuple[str, ...]:
    """The zones the GPU pool places nodes in. gcp: `zones`, else the zones of the region that offer the
    pool's accelerator (infra/catalog/gpu_zones.yaml); aws: `zones` (empty = the subnets' zones);
    existing: none. The GKE pool and the budget (infra/cost.py) both read this."""
    if cfg.cloud != "gcp":
        return tuple(cfg.zones)
    region = cfg.region or ""
    if cfg.zones:
        outside = [zone for zone in cfg.zones if not zone.startswith(f"{region}-")]
        if outside:
            raise ConfigError("zones", list(cfg.zones), f"zones of region {region} only ({', '.join(outside)} is not)",
                              cfg.stack, f'\'["{region}-a"]\'')
        return tuple(cfg.zones)
    shape = node_shape(cfg)
    accelerator = shape.accelerator if shape else None
    zones = gpu_zones("gcp", accelerator, region)
    if not zones:
        raise ConfigError(
            "zones", None,
            f"the zone catalog ({catalog_path('gpu_zones')}, read {gpu_zones_read_on()}) lists no zone of "
            f"{region} offering {accelerator}; list the zones that do (gcloud compute accelerator-types list "
            f"--filter=\"name={accelerator} AND zone~{region}\")", cfg.stack, f'\'["{region}-a"]\'')
    return tuple(zones)


# EKS refuses control-plane subnets in these availability zone IDs (UnsupportedAvailabilityZoneException;
# "Subnet requirements and considerations", https://docs.aws.amazon.com/eks/latest/userguide/network-reqs.html,
# source awsdocs/amazon-eks-user-guide latest/ug/networking/network-reqs.adoc). By ID, not by name: a zone's
# name maps to a different ID in each account.
EKS_REFUSED_ZONE_IDS = ("use1-az3", "usw1-az2", "cac1-az3")
# EKS CreateCluster needs subnets in at least two availability zones (same page).
EKS_MIN_ZONES = 2


def eks_zone_choice(cfg: StackConfig, zone_names: list[str], zone_ids: list[str],
                    offered_zone_ids: list[str]) -> dict:
    """The EKS subnets' zones: of the region's available zones (or `zones`, when set), the first EKS_MIN_ZONES
    that EKS accepts for its control plane and that offer the GPU instance type (EC2 instance-type offerings
    by zone ID), with the reason each other zone was passed over. The GPU node group uses the same subnets,
    so every zone it can launch in offers its instance type."""
    instance = node_shape(cfg).instance
    wanted = list(cfg.zones) or list(zone_names)
    unknown = [name for name in wanted if name not in zone_names]
    if unknown:
        raise ConfigError("zones", list(cfg.zones), f"available zones of {cfg.region} only ({', '.join(unknown)} "
                          f"is not one: {', '.join(zone_names)})", cfg.stack)
    ids = dict(zip(zone_names, zone_ids))
    chosen, passed_over = [], {}
    for name in wanted:
        label = f"{name} ({ids[name]})"
        if ids[name] in EKS_REFUSED_ZONE_IDS:
            passed_over[label] = "EKS does not accept control-plane subnets in this zone"
        elif ids[name] not in offered_zone_ids:
            passed_over[label] = f"{instance} is not offered in this zone"
        elif len(chosen) < EKS_MIN_ZONES:
            chosen.append(name)
    if len(chosen) < EKS_MIN_ZONES:
        reasons = "; ".join(f"{zone}: {why}" for zone, why in passed_over.items())
        raise ConfigError("zones", list(cfg.zones) or None,
                          f"{EKS_MIN_ZONES} zones of {cfg.region} that EKS accepts and that offer {instance} "
                          f"(found {', '.join(chosen) or 'none'}; {reasons}); choose another region or gpuType",
                          cfg.stack)
    return {"zones": chosen, "zoneIds": [ids[name] for name in chosen], "passedOver": passed_over,
            "why": f"the first {EKS_MIN_ZONES} zones EKS accepts for its control plane that offer {instance}"}


def gke_zone_choice(cfg: StackConfig) -> dict:
    """The GKE pools' zones (gpu_pool_zones) and where they come from, as the plan reports them."""
    zones = list(gpu_pool_zones(cfg))
    why = ("the stack's `zones`" if cfg.zones else
           f"the zones of {cfg.region} offering {node_shape(cfg).accelerator} in the zone catalog "
           f"({catalog_path('gpu_zones')}, read {gpu_zones_read_on()})")
    return {"zones": zones, "why": why}


def gpu_pool_initial_nodes_per_zone(cfg: StackConfig) -> int:
    """GKE creates a pool with initial_node_count nodes in *each* of its zones ("In regional or multi-zonal
    clusters, this is the number of nodes per zone", pulumi_gcp 10.2.0 container/node_pool.py). Rounding
    gpuNodesMin down keeps the pool at most gpuNodesMin (so at most gpuNodesMax) nodes at creation; the
    autoscaler adds nodes for pending GPU pods up to gpuNodesMax."""
    return cfg.gpu_nodes_min // len(gpu_pool_zones(cfg))
