"""What each cluster target installs besides its node pools, as data (no Pulumi import).

The cluster modules create what this lists and the placement check (infra/placement/) reads it, so
the check sees the same add-ons, StorageClasses and device plugin that `pulumi up` would install.
What a cloud runs on its own (GKE's PD CSI driver, its StorageClasses, its system DaemonSets) is
not listed here: those are cloud facts in infra/placement/clouds.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.config import StackConfig
from infra.nodepool import POOL_NAME, SYSTEM_POOL_NAME

# GKE installs the NVIDIA driver and its own device plugin on GPU nodes; elsewhere the stack installs
# the nvidia-device-plugin Helm release (infra/platform/device_plugin.py).
CLOUD_PROVIDES_DEVICE_PLUGIN = {"aws": False, "gcp": True, "existing": False}


@dataclass(frozen=True)
class ClusterAddons:
    # Cloud-managed add-ons this stack enables, by their API name (EKS: "aws-ebs-csi-driver", ...).
    managed_addons: tuple[str, ...]
    # StorageClass objects this stack creates (plain manifests).
    storage_classes: tuple[dict, ...]
    provides_device_plugin: bool
    # Pools whose node count grows to max_nodes when pods are pending (GKE's node-pool autoscaling, or
    # a cluster autoscaler this stack installs); the others keep max(min_nodes, 1) nodes.
    autoscaled_pools: tuple[str, ...] = ()
    # Whether the stack installs the Cluster Autoscaler Helm release (infra/platform/cluster_autoscaler.py).
    cluster_autoscaler: bool = False


# GKE autoscales the GPU pool itself (gcp.py NodePool autoscaling); EKS has no autoscaler by default.
CLOUD_AUTOSCALED_POOLS = {"aws": (), "gcp": (POOL_NAME,), "existing": ()}


@dataclass(frozen=True)
class ManagedAddon:
    """An EKS managed add-on: its API name, its configuration values, the add-ons it needs first."""

    name: str
    configuration: dict = field(default_factory=dict)
    after: tuple[str, ...] = ()


# EKS managed add-ons (infra/clusters/aws.py creates them, in this order):
# - vpc-cni with its network-policy agent, so NetworkPolicy objects are enforced; off unless configured
#   (https://docs.aws.amazon.com/eks/latest/userguide/cni-network-policy-configure.html, enableNetworkPolicy).
# - eks-pod-identity-agent, which hands the add-on and autoscaler pods their IAM roles (EKS Pod Identity).
# - aws-ebs-csi-driver: since EKS 1.23 every EBS volume, gp2 included, is provisioned by ebs.csi.aws.com
#   only (https://docs.aws.amazon.com/eks/latest/userguide/ebs-csi-migration-faq.html).
EKS_ADDONS = (
    ManagedAddon("vpc-cni", {"enableNetworkPolicy": "true"}),
    ManagedAddon("eks-pod-identity-agent"),
    ManagedAddon("aws-ebs-csi-driver", after=("eks-pod-identity-agent",)),
)
# The service accounts that EKS Pod Identity gives IAM roles: (namespace, name).
EBS_CSI_CONTROLLER_SERVICE_ACCOUNT = ("kube-system", "ebs-csi-controller-sa")
CLUSTER_AUTOSCALER_SERVICE_ACCOUNT = ("kube-system", "cluster-autoscaler")
# The model volume's class on EKS; default class too (EKS >= 1.30 makes none). WaitForFirstConsumer puts
# the volume in the zone of the node the pod lands on.
GP3_STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": "gp3", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": "ebs.csi.aws.com",
    "parameters": {"type": "gp3", "encrypted": "true"},
    "volumeBindingMode": "WaitForFirstConsumer",
    "reclaimPolicy": "Delete",
    "allowVolumeExpansion": True,
}


# The model volume's class on GKE: GKE's own PD CSI driver and pd-balanced disks, as its default standard-rwo,
# plus the stack's cost labels on every disk (added by infra/clusters/gcp.py: the driver's "labels" parameter,
# "key1=value1,key2=value2", gcp-compute-persistent-disk-csi-driver pkg/common/parameters.go ParameterKeyLabels).
# Not the cluster default (standard-rwo stays it); the gcp stacks name it in storageClass.
GKE_PD_STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": "qwen2vl-pd-balanced"},
    "provisioner": "pd.csi.storage.gke.io",
    "parameters": {"type": "pd-balanced"},
    "volumeBindingMode": "WaitForFirstConsumer",
    "reclaimPolicy": "Delete",
    "allowVolumeExpansion": True,
}


def eks_managed_addons() -> tuple[ManagedAddon, ...]:
    return EKS_ADDONS


def cluster_addons(cfg: StackConfig) -> ClusterAddons:
    """The add-ons of this stack's cluster target."""
    if cfg.cloud == "aws":
        return ClusterAddons(managed_addons=tuple(addon.name for addon in EKS_ADDONS),
                             storage_classes=(GP3_STORAGE_CLASS,), provides_device_plugin=False,
                             # The Cluster Autoscaler release (chart_values.cluster_autoscaler_values) discovers
                             # node groups by the tags EKS puts on every managed node group's Auto Scaling group
                             # (k8s.io/cluster-autoscaler/enabled and /<cluster>, managed-node-groups.html), so it
                             # grows the system group (1..2) as well as the GPU group.
                             autoscaled_pools=(POOL_NAME, SYSTEM_POOL_NAME), cluster_autoscaler=True)
    return ClusterAddons(managed_addons=(), storage_classes=(GKE_PD_STORAGE_CLASS,) if cfg.cloud == "gcp" else (),
                         provides_device_plugin=CLOUD_PROVIDES_DEVICE_PLUGIN[cfg.cloud],
                         autoscaled_pools=CLOUD_AUTOSCALED_POOLS[cfg.cloud])
