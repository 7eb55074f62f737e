"""GKE: a regional cluster without its default pool, a system pool and the GPU pool from the pool spec,
both in the zones that offer the GPU, on a node service account of their own with Workload Identity."""

from __future__ import annotations

import re

import pulumi
import pulumi_gcp as gcp

from infra.clusters import ClusterHandle, managed_cluster_handle, storage_class_resource
from infra.clusters.kubeconfig import exec_kubeconfig
from infra.clusters.quota import enforce_gpu_quota
from infra.config import StackConfig
from infra.nodepool import SYSTEM_NODES_PER_ZONE, GpuPoolSpec, gpu_pool_initial_nodes_per_zone, gpu_pool_spec, \
    gke_zone_choice, gpu_pool_zones, system_pool_spec
from infra.platform.addons import GKE_PD_STORAGE_CLASS

OAUTH_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
# What a new project must have on before the cluster, the node pools and the image registry exist: IAM for
# the node service account, Cloud Resource Manager for its project role bindings, Cloud Quotas for the GPU
# quota check of later updates (infra/clusters/quota.py; the first `up` of a fresh project cannot read it
# yet and warns). Left on at destroy:
# turning an API off breaks whatever else in the project uses it.
REQUIRED_APIS = ("compute.googleapis.com", "container.googleapis.com", "artifactregistry.googleapis.com",
                 "iam.googleapis.com", "cloudresourcemanager.googleapis.com", "cloudquotas.googleapis.com")
# The least a node needs: GKE's own least-privilege node role (logs, metrics, their metadata, the metrics
# the autoscaler reads: https://cloud.google.com/kubernetes-engine/docs/how-to/hardening-your-cluster#use_least_privilege_sa,
# roles/container.defaultNodeServiceAccount), and pulling our image from Artifact Registry.
NODE_ROLES = ("roles/container.defaultNodeServiceAccount", "roles/artifactregistry.reader")
# A service account id: 6-30 characters, [a-z][-a-z0-9]*[a-z0-9] (IAM CreateServiceAccount accountId).
SERVICE_ACCOUNT_ID_MAX = 30
# Dataplane V2 (Cilium) enforces NetworkPolicy; without it or network_policy GKE enforces none
# (https://cloud.google.com/kubernetes-engine/docs/concepts/dataplane-v2).
DATAPATH = "ADVANCED_DATAPATH"
# Pods see the GKE metadata server, which serves Workload Identity tokens, not the node's credentials.
WORKLOAD_METADATA = {"mode": "GKE_METADATA"}
# Cloud NAT for private nodes. pulumi_gcp.compute's package __init__ imports all its ~300 resource modules
# (about 2 s of CPU, more than the offline plan's whole budget), so its router and NAT are registered by
# type token with the provider's own input names (pulumi_gcp 10.2.0 compute/router.py, router_nat.py;
# tests/test_cluster_layer.py holds the names to that source).
# When GKE may upgrade the control plane and nodes (the REGULAR channel's automatic upgrades): weekend nights,
# 02:00-08:00 UTC on Saturday and Sunday. GKE asks for windows that add up to at least 48 hours in any 32 days,
# 4 hours or more at a time (https://cloud.google.com/kubernetes-engine/docs/concepts/maintenance-windows-and-exclusions);
# about 9 weekend days in 32 give 54 hours. The date only anchors the recurrence.
MAINTENANCE_WINDOW = {"start_time": "2026-01-03T02:00:00Z", "end_time": "2026-01-03T08:00:00Z",
                      "recurrence": "FREQ=WEEKLY;BYDAY=SA,SU"}
# A GPU node upgrade drains a node before GKE creates its replacement (no surge node): an upgrade never needs
# quota for a GPU node beyond the pool's own (https://cloud.google.com/kubernetes-engine/docs/concepts/node-pool-upgrade-strategies#surge,
# maxSurge=0 with maxUnavailable=1).
GPU_POOL_UPGRADE = {"strategy": "SURGE", "max_surge": 0, "max_unavailable": 1}
ROUTER_TYPE = "gcp:compute/router:Router"
ROUTER_NAT_TYPE = "gcp:compute/routerNat:RouterNat"


def gpu_node_config(pool: GpuPoolSpec) -> dict:
    """The GPU pool's node settings as data, from the cloud-neutral pool spec."""
    return {
        "machine_type": pool.shape.instance,
        "spot": pool.spot,
        "disk_size_gb": pool.disk_gb,
        "labels": pool.node_labels,
        "resource_labels": dict(pool.tags),
        "taints": [pool.cloud_taint()],
        # GKE installs the driver and its own device plugin when asked to.
        "guest_accelerators": [{
            "type": pool.shape.accelerator,
            "count": pool.shape.gpus,
            "gpu_driver_installation_config": {"gpu_driver_version": "LATEST"},
        }],
        "oauth_scopes": OAUTH_SCOPES,
        "workload_metadata_config": WORKLOAD_METADATA,
    }


def project_unique_name(base: str, stack: str, limit: int = 63) -> str:
    """A name that two stacks in one project or region do not share (a service account id, a Cloud Router):
    the base and the stack's name in lower case, cut to the limit."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"{base}-{stack}".lower())[:limit]
    return name.rstrip("-")


def cloud_router_inputs(router_name: str, region: str) -> dict:
    return {"name": router_name, "network": "default", "region": region}


def cloud_nat_inputs(router_name: str, region: str) -> dict:
    """NAT for every subnet range of the default network, with Google-allocated addresses."""
    return {"name": router_name, "router": router_name, "region": region, "natIpAllocateOption": "AUTO_ONLY",
            "sourceSubnetworkIpRangesToNat": "ALL_SUBNETWORKS_ALL_IP_RANGES"}


def master_authorized_networks(cidrs: tuple[str, ...]) -> dict | None:
    """apiAllowedCidrs as GKE master authorized networks; none configured = the endpoint answers anywhere (GKE's
    default), as EKS's does."""
    if not cidrs:
        return None
    return {"cidr_blocks": [{"cidr_block": cidr, "display_name": f"apiAllowedCidrs {index}"}
                            for index, cidr in enumerate(cidrs)]}


def disk_label_parameters(labels: dict[str, str]) -> dict[str, str]:
    """The PD CSI driver's StorageClass parameter that labels each disk it creates (GKE_PD_STORAGE_CLASS)."""
    return {"labels": ",".join(f"{key}={value}" for key, value in sorted(labels.items()))}


def kubeconfig(name: str, endpoint: str, ca_certificate: str) -> str:
    """Authenticates through gke-gcloud-auth-plugin."""
    return exec_kubeconfig(name, f"https://{endpoint}", ca_certificate,
                           {"command": "gke-gcloud-auth-plugin", "provideClusterInfo": True})


class GkeCluster(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("qwen2vl:clusters:GkeCluster", name, None, opts)
        pool = gpu_pool_spec(cfg)
        zones = list(gpu_pool_zones(cfg))
        provider = gcp.Provider("gcp", project=cfg.gcp_project, region=cfg.region,
                                default_labels=dict(pool.tags), opts=pulumi.ResourceOptions(parent=self))
        self.cloud_provider = provider
        # At `pulumi up`, before anything that bills: refuse when the project's GPU quota is too small.
        enforce_gpu_quota(cfg, pulumi.InvokeOptions(parent=self, provider=provider))
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        stateful = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=cfg.protect))
        self.apis = [gcp.projects.Service(api.split(".")[0], service=api, disable_on_destroy=False, opts=child)
                     for api in REQUIRED_APIS]
        after_apis = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=self.apis))
        node_account = self._node_account(cfg, after_apis)
        network_ready = [] if cfg.public_nodes else [self._cloud_nat(name, cfg, after_apis)]
        self.cluster = gcp.container.Cluster(
            name,
            location=cfg.region,
            node_locations=zones,
            # A minor the REGULAR channel offers (checked against infra/catalog/kubernetes_versions.yaml);
            # the channel picks the patch and upgrades within its support window.
            min_master_version=cfg.kubernetes_version,
            remove_default_node_pool=True,
            initial_node_count=1,
            networking_mode="VPC_NATIVE",
            ip_allocation_policy=gcp.container.ClusterIpAllocationPolicyArgs(),
            datapath_provider=DATAPATH,
            workload_identity_config=gcp.container.ClusterWorkloadIdentityConfigArgs(
                workload_pool=f"{cfg.gcp_project}.svc.id.goog"),
            # Private nodes, public control-plane endpoint. New clusters reach their control plane through
            # Private Service Connect, which needs no master CIDR of ours
            # (https://cloud.google.com/kubernetes-engine/docs/concepts/private-service-connect).
            private_cluster_config=None if cfg.public_nodes else gcp.container.ClusterPrivateClusterConfigArgs(
                enable_private_nodes=True, enable_private_endpoint=False),
            release_channel=gcp.container.ClusterReleaseChannelArgs(channel="REGULAR"),
            maintenance_policy=gcp.container.ClusterMaintenancePolicyArgs(
                recurring_window=gcp.container.ClusterMaintenancePolicyRecurringWindowArgs(**MAINTENANCE_WINDOW)),
            master_authorized_networks_config=self._authorized_networks(cfg),
            deletion_protection=cfg.protect,
            opts=pulumi.ResourceOptions.merge(stateful, pulumi.ResourceOptions(
                depends_on=[*self.apis, *network_ready])),
        )
        self.system_pool = gcp.container.NodePool(
            f"{name}-system",
            cluster=self.cluster.id,
            location=cfg.region,
            node_locations=zones,
            node_count=SYSTEM_NODES_PER_ZONE,  # per zone, in the GPU pool's zones (infra/nodepool.py)
            node_config=gcp.container.NodePoolNodeConfigArgs(
                machine_type=system_pool_spec(cfg).instance, service_account=node_account.email,
                oauth_scopes=OAUTH_SCOPES, workload_metadata_config=WORKLOAD_METADATA),
            opts=child,
        )
        node = gpu_node_config(pool)
        accelerator = node["guest_accelerators"][0]
        self.gpu_pool = gcp.container.NodePool(
            f"{name}-{pool.name}",
            cluster=self.cluster.id,
            location=cfg.region,
            node_locations=zones,
            initial_node_count=gpu_pool_initial_nodes_per_zone(cfg),
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
                service_account=node_account.email,
                workload_metadata_config=node["workload_metadata_config"],
            ),
            upgrade_settings=gcp.container.NodePoolUpgradeSettingsArgs(**GPU_POOL_UPGRADE),
            # Cattle, not protected even in prod: a gpuType change replaces the pool, old one first, so the
            # GPU quota never has to hold both.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                delete_before_replace=True, ignore_changes=["initialNodeCount"])),
        )
        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(
            self.cluster.name, self.cluster.endpoint, self.cluster.master_auth.cluster_ca_certificate
        ).apply(lambda parts: kubeconfig(parts[0], parts[1], parts[2])))
        self.register_outputs({"clusterName": self.cluster.name, "gpuPool": self.gpu_pool.name})

    @staticmethod
    def _authorized_networks(cfg: StackConfig) -> gcp.container.ClusterMasterAuthorizedNetworksConfigArgs | None:
        networks = master_authorized_networks(cfg.api_allowed_cidrs)
        if networks is None:
            return None
        return gcp.container.ClusterMasterAuthorizedNetworksConfigArgs(cidr_blocks=[
            gcp.container.ClusterMasterAuthorizedNetworksConfigCidrBlockArgs(**block)
            for block in networks["cidr_blocks"]])

    def _node_account(self, cfg: StackConfig, opts: pulumi.ResourceOptions) -> gcp.serviceaccount.Account:
        """The nodes' own service account with the least roles, instead of the project's default compute
        account (Editor, or no roles at all where the organisation turns automatic grants off)."""
        account_id = project_unique_name("qwen2vl-nodes", cfg.stack, SERVICE_ACCOUNT_ID_MAX)
        account = gcp.serviceaccount.Account("qwen2vl-gke-nodes", account_id=account_id,
                                             display_name=f"qwen2vl GKE nodes ({cfg.stack})", opts=opts)
        for role in NODE_ROLES:
            gcp.projects.IAMMember(f"qwen2vl-gke-nodes-{role.split('/')[1]}", project=cfg.gcp_project,
                                   role=role, member=account.member,
                                   opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=account)))
        return account

    def _cloud_nat(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
        """Private nodes reach the model hub and registries through Cloud NAT on the default network."""
        router_name = project_unique_name(f"{name}-nat", cfg.stack)
        router = pulumi.CustomResource(ROUTER_TYPE, router_name, cloud_router_inputs(router_name, cfg.region),
                                       opts=opts)
        return pulumi.CustomResource(ROUTER_NAT_TYPE, router_name, cloud_nat_inputs(router_name, cfg.region),
                                     opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=router)))


def create(cfg: StackConfig) -> ClusterHandle:
    gke = GkeCluster("qwen2vl", cfg)
    handle = managed_cluster_handle(cfg, gke, gke.cluster.name, gke.gpu_pool.name,
                                    system_nodes=[gke.system_pool], cloud_apis=gke.apis,
                                    zones=pulumi.Output.from_input(gke_zone_choice(cfg)))
    handle.ready.append(storage_class_resource(GKE_PD_STORAGE_CLASS, disk_label_parameters(cfg.labels),
                                               pulumi.ResourceOptions(parent=gke, provider=handle.provider)))
    return handle
