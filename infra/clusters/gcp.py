"""GKE: a regional cluster without its default pool, a system pool and the GPU pool from the pool spec."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from infra.clusters import ClusterHandle, managed_cluster_handle
from infra.clusters.kubeconfig import exec_kubeconfig
from infra.nodepool import GpuPoolSpec, gpu_pool_spec, system_pool_spec
from infra.config import StackConfig

OAUTH_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


def gpu_node_config(pool: GpuPoolSpec) -> dict:
    """The GPU pool's node settings as data, from the cloud-neutral pool spec."""
    return {
        "machine_type": pool.shape.instance,
        "spot": pool.spot,
        "disk_size_gb": pool.disk_gb,
        "labels": dict(pool.labels),
        "resource_labels": dict(pool.tags),
        "taints": [pool.cloud_taint()],
        # GKE installs the driver and its own device plugin when asked to.
        "guest_accelerators": [{
            "type": pool.shape.accelerator,
            "count": pool.shape.gpus,
            "gpu_driver_installation_config": {"gpu_driver_version": "LATEST"},
        }],
        "oauth_scopes": OAUTH_SCOPES,
    }


def kubeconfig(name: str, endpoint: str, ca_certificate: str) -> str:
    """Authenticates through gke-gcloud-auth-plugin."""
    return exec_kubeconfig(name, f"https://{endpoint}", ca_certificate,
                           {"command": "gke-gcloud-auth-plugin", "provideClusterInfo": True})


class GkeCluster(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("qwen2vl:clusters:GkeCluster", name, None, opts)
        pool = gpu_pool_spec(cfg)
        provider = gcp.Provider("gcp", project=cfg.gcp_project, region=cfg.region,
                                default_labels=dict(pool.tags), opts=pulumi.ResourceOptions(parent=self))
        self.cloud_provider = provider
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        stateful = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=cfg.protect))
        zones = list(cfg.zones) or None
        self.cluster = gcp.container.Cluster(
            name,
            location=cfg.region,
            node_locations=zones,
            min_master_version=cfg.kubernetes_version,
            remove_default_node_pool=True,
            initial_node_count=1,
            networking_mode="VPC_NATIVE",
            ip_allocation_policy=gcp.container.ClusterIpAllocationPolicyArgs(),
            release_channel=gcp.container.ClusterReleaseChannelArgs(channel="REGULAR"),
            deletion_protection=cfg.protect,
            opts=stateful,
        )
        gcp.container.NodePool(
            f"{name}-system",
            cluster=self.cluster.id,
            location=cfg.region,
            node_count=1,
            node_config=gcp.container.NodePoolNodeConfigArgs(machine_type=system_pool_spec(cfg).instance,
                                                             oauth_scopes=OAUTH_SCOPES),
            opts=child,
        )
        node = gpu_node_config(pool)
        accelerator = node["guest_accelerators"][0]
        self.gpu_pool = gcp.container.NodePool(
            f"{name}-{pool.name}",
            cluster=self.cluster.id,
            location=cfg.region,
            node_locations=zones,
            initial_node_count=pool.min_nodes,
            # GKE's own autoscaler scales the pool, to zero when idle where min_nodes is 0.
            autoscaling=gcp.container.NodePoolAutoscalingArgs(total_min_node_count=pool.min_nodes,
                                                              total_max_node_count=pool.max_nodes),
            node_config=gcp.container.NodePoolNodeConfigArgs(
                machine_type=node["machine_type"],
                spot=node["spot"],
                disk_size_gb=node["disk_size_gb"],
                labels=node["labels"],
                resource_labels=node["resource_labels"],
                taints=[gcp.container.NodePoolNodeConfigTaintArgs(**taint) for taint in node["taints"]],
                guest_accelerators=[gcp.container.NodePoolNodeConfigGuestAcceleratorArgs(
                    type=accelerator["type"],
                    count=accelerator["count"],
                    gpu_driver_installation_config=gcp.container.NodePoolNodeConfigGuestAcceleratorGpuDriverInstallationConfigArgs(
                        **accelerator["gpu_driver_installation_config"]),
                )],
                oauth_scopes=node["oauth_scopes"],
            ),
            opts=pulumi.ResourceOptions.merge(stateful, pulumi.ResourceOptions(ignore_changes=["initialNodeCount"])),
        )
        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(
            self.cluster.name, self.cluster.endpoint, self.cluster.master_auth.cluster_ca_certificate
        ).apply(lambda parts: kubeconfig(parts[0], parts[1], parts[2])))
        self.register_outputs({"clusterName": self.cluster.name, "gpuPool": self.gpu_pool.name})


def create(cfg: StackConfig) -> ClusterHandle:
    gke = GkeCluster("qwen2vl", cfg)
    # GKE installs the NVIDIA driver and device plugin on GPU nodes itself.
    return managed_cluster_handle(cfg, gke, gke.cluster.name, gke.gpu_pool, gke.gpu_pool.name,
                                  provides_device_plugin=True)
