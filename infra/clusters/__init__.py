"""Cluster targets. Each returns the same small handle; only the chosen cloud's SDK is imported."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Sequence

import pulumi
import pulumi_kubernetes as k8s

from infra.config import StackConfig
from infra.nodepool import GpuPlacement, gpu_pool_spec

TARGET_MODULES = {"existing": "infra.clusters.existing", "aws": "infra.clusters.aws", "gcp": "infra.clusters.gcp"}


@dataclass
class ClusterHandle:
    name: pulumi.Input[str]
    provider: k8s.Provider
    placement: GpuPlacement
    gpu_pool_name: pulumi.Input[str]
    kubeconfig: pulumi.Output[str] | None  # a secret; None when the kubeconfig is the user's own
    # Whether the cloud installs the NVIDIA device plugin on GPU nodes itself (GKE does).
    provides_device_plugin: bool
    gpu_pool_ready: Sequence[pulumi.Resource] = field(default_factory=list)
    # The cloud's provider (region, project, default tags) for other cloud resources such as the registry.
    cloud_provider: pulumi.ProviderResource | None = None


def managed_cluster_handle(cfg: StackConfig, component: pulumi.ComponentResource, cluster_name: pulumi.Input[str],
                           gpu_pool: pulumi.CustomResource, gpu_pool_name: pulumi.Input[str],
                           provides_device_plugin: bool) -> ClusterHandle:
    """The handle of a cluster this stack made (EKS, GKE): a provider on its kubeconfig, after its GPU pool."""
    provider = k8s.Provider(f"{cfg.cloud}-cluster", kubeconfig=component.kubeconfig,
                            opts=pulumi.ResourceOptions(parent=component, depends_on=[gpu_pool]))
    return ClusterHandle(
        name=cluster_name,
        provider=provider,
        placement=gpu_pool_spec(cfg).placement,
        gpu_pool_name=gpu_pool_name,
        kubeconfig=component.kubeconfig,
        provides_device_plugin=provides_device_plugin,
        cloud_provider=component.cloud_provider,
        gpu_pool_ready=[gpu_pool],
    )


def create_cluster(cfg: StackConfig) -> ClusterHandle:
    module = importlib.import_module(TARGET_MODULES[cfg.cloud])
    return module.create(cfg)
