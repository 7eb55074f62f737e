"""The GPU node pool as one cloud-neutral spec; aws.py and gcp.py adapt it to their APIs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from infra.config import StackConfig
from infra.preflight.catalog import InstanceShape
from infra.workload.spec import GPU_TAINT, GpuPlacement

POOL_NAME = "gpu"
# Room for the serving image (~15 GB), container layers being unpacked, and logs; the model itself
# lives on the cache volume.
GPU_NODE_DISK_GB = 200


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

    @property
    def placement(self) -> GpuPlacement:
        return GpuPlacement(dict(self.labels))

    def cloud_taint(self) -> dict[str, str]:
        """The taint in the EKS and GKE APIs' spelling (NO_SCHEDULE for Kubernetes' NoSchedule)."""
        effect = re.sub(r"(?<!^)(?=[A-Z])", "_", self.taint["effect"]).upper()
        return {"key": self.taint["key"], "value": self.taint["value"], "effect": effect}


def node_shape(cfg: StackConfig) -> InstanceShape | None:
    """The catalog's instance with exactly tensorParallelSize GPUs of gpuType in the stack's cloud."""
    if cfg.cloud == "existing":
        return None
    shapes = cfg.gpu.shapes_in(cfg.cloud, gpus=cfg.tensor_parallel_size)
    return shapes[0] if shapes else None


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
    )
