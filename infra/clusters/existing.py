"""A cluster made elsewhere (including kind/k3d for CPU trials), reached through a kubeconfig context.

GPU nodes must carry the pool labels and taint that the cloud targets set (see docs/clusters/existing.md):
  kubectl label node NODE qwen2vl.io/gpu-pool=gpu qwen2vl.io/gpu-type=<gpuType> nvidia.com/gpu.present=true
  kubectl taint node NODE nvidia.com/gpu=present:NoSchedule
"""

from __future__ import annotations

import pulumi_kubernetes as k8s

from infra.clusters import ClusterHandle
from infra.nodepool import gpu_pool_spec
from infra.config import StackConfig


def create(cfg: StackConfig) -> ClusterHandle:
    provider = k8s.Provider("existing-cluster", context=cfg.kube_context)
    pool = gpu_pool_spec(cfg)
    return ClusterHandle(
        name=cfg.kube_context or "current-context",
        provider=provider,
        placement=pool.placement,
        gpu_pool_name=pool.name,
        kubeconfig=None,
        ready=[provider],
    )
