"""Cluster targets. Each returns the same small handle; only the chosen cloud's SDK is imported."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from datetime import date

import pulumi
import pulumi_kubernetes as k8s

from infra import pins, run_mode
from infra.clusters.quota import plan_notice
from infra.clusters.versions import check_kubernetes_version
from infra.config import ConfigError, StackConfig
from infra.nodepool import GpuPlacement, gpu_pool_spec

TARGET_MODULES = {"existing": "infra.clusters.existing", "aws": "infra.clusters.aws", "gcp": "infra.clusters.gcp"}


@dataclass
class ClusterHandle:
    name: pulumi.Input[str]
    provider: k8s.Provider
    placement: GpuPlacement
    gpu_pool_name: pulumi.Input[str]
    kubeconfig: pulumi.Output[str] | None  # a secret; None when the kubeconfig is the user's own
    # What the platform and the workload come after: the system pool and the add-ons and StorageClasses the
    # pods need (a Helm release waits for its pods; a pod without a node never starts). Never the GPU pool:
    # its nodes come from the autoscaler when a GPU pod is pending, and a Kubernetes object that depends on it
    # would keep it alive through a failed destroy (the engine skips the dependencies of a failed delete:
    # pulumi pkg/resource/deploy/deployment_executor.go, erroredDeps), billing a GPU node nobody scales down.
    ready: list[pulumi.Resource] = field(default_factory=list)
    # The cloud's provider (region, project, default tags) for other cloud resources such as the registry.
    cloud_provider: pulumi.ProviderResource | None = None
    # What those other cloud resources come after: the project's service APIs on GCP (a fresh project
    # refuses an Artifact Registry repository until its API is enabled).
    cloud_apis: list[pulumi.Resource] = field(default_factory=list)
    # The zones the cluster's subnets or pools were placed in and why (infra/nodepool.py), for the plan.
    zones: pulumi.Output[dict] | None = None


def managed_cluster_handle(cfg: StackConfig, component: pulumi.ComponentResource, cluster_name: pulumi.Input[str],
                           gpu_pool_name: pulumi.Input[str], system_nodes: list[pulumi.Resource],
                           cloud_apis: list[pulumi.Resource] | None = None,
                           zones: pulumi.Output[dict] | None = None) -> ClusterHandle:
    """The handle of a cluster this stack made (EKS, GKE): a provider on its kubeconfig, after its system nodes
    and add-ons (not the GPU pool: ClusterHandle.ready says why)."""
    provider = k8s.Provider(f"{cfg.cloud}-cluster", kubeconfig=component.kubeconfig,
                            opts=pulumi.ResourceOptions(parent=component, depends_on=list(system_nodes)))
    return ClusterHandle(
        name=cluster_name,
        provider=provider,
        placement=gpu_pool_spec(cfg).placement,
        gpu_pool_name=gpu_pool_name,
        kubeconfig=component.kubeconfig,
        cloud_provider=component.cloud_provider,
        ready=list(system_nodes),
        cloud_apis=list(cloud_apis or []),
        zones=zones,
    )


def storage_class_resource(manifest: dict, cost_parameters: dict[str, str],
                           opts: pulumi.ResourceOptions) -> k8s.storage.v1.StorageClass:
    """A StorageClass of infra/platform/addons.py, with the parameters that put the stack's cost tags or labels
    on every volume its CSI driver creates (so a volume a failed destroy leaves behind names its stack)."""
    return k8s.storage.v1.StorageClass(
        manifest["metadata"]["name"], metadata=manifest["metadata"], provisioner=manifest["provisioner"],
        parameters={**manifest["parameters"], **cost_parameters}, volume_binding_mode=manifest["volumeBindingMode"],
        reclaim_policy=manifest["reclaimPolicy"], allow_volume_expansion=manifest["allowVolumeExpansion"], opts=opts)


def check_cluster_config(cfg: StackConfig, today: date) -> list[str]:
    """What a cloud would refuse, as a ConfigError before any resource exists; warnings to show."""
    if cfg.cloud == "aws" and cfg.zones and not cfg.subnet_ids and len(set(cfg.zones)) < 2:
        raise ConfigError("zones", list(cfg.zones), "EKS needs subnets in at least two availability zones "
                          "(https://docs.aws.amazon.com/eks/latest/userguide/network-reqs.html)", cfg.stack,
                          f"'[\"{cfg.region}a\", \"{cfg.region}b\"]'")
    warnings = [warning] if (warning := check_kubernetes_version(cfg, today)) else []
    warnings += [open_api] if (open_api := open_api_endpoint_warning(cfg)) else []
    return warnings + ([mismatch] if (mismatch := autoscaler_version_mismatch(cfg)) else [])


def open_api_endpoint_warning(cfg: StackConfig) -> str | None:
    """The cluster's public API endpoint answers the whole internet unless apiAllowedCidrs narrows it."""
    if cfg.cloud not in ("aws", "gcp") or (cfg.api_allowed_cidrs and "0.0.0.0/0" not in cfg.api_allowed_cidrs):
        return None
    return ("the cluster's public API endpoint accepts connections from 0.0.0.0/0 (authentication still applies): "
            "set qwen2vl:apiAllowedCidrs to the CIDRs of the people and CI that run kubectl and pulumi")


def autoscaler_version_mismatch(cfg: StackConfig) -> str | None:
    """Cluster Autoscaler supports the Kubernetes minor it was released with (kubernetes/autoscaler
    cluster-autoscaler/README.md, "Releases": use the CA minor that matches the cluster's). The pinned chart's
    CA is for one minor; EKS's STANDARD upgrade policy moves the control plane on at the end of standard
    support, without this stack, so the plan says when the two differ."""
    autoscaler_minor = ".".join(pins.CLUSTER_AUTOSCALER_APP_VERSION.split(".")[:2])
    if cfg.cloud != "aws" or cfg.kubernetes_version == autoscaler_minor:
        return None
    return (f"Cluster Autoscaler {pins.CLUSTER_AUTOSCALER_APP_VERSION} (chart {pins.CLUSTER_AUTOSCALER_CHART_VERSION}, "
            f"infra/pins.py) is made for Kubernetes {autoscaler_minor}, not kubernetesVersion "
            f"{cfg.kubernetes_version}: pin the chart whose appVersion is {cfg.kubernetes_version}.x in "
            f"infra/pins.py, or keep kubernetesVersion {autoscaler_minor}")


def create_cluster(cfg: StackConfig, today: date | None = None) -> ClusterHandle:
    try:
        warnings = check_cluster_config(cfg, today or date.today())
    except ConfigError as error:
        # As the program's other config errors: a paragraph for people, not a traceback.
        raise pulumi.RunError(str(error)) from error
    if not run_mode.deploying() and plan_notice(cfg):
        warnings.append(plan_notice(cfg))
    for warning in warnings:
        pulumi.log.warn(warning)
    module = importlib.import_module(TARGET_MODULES[cfg.cloud])
    return module.create(cfg)
