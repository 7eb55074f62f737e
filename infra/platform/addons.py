"""What each cluster target installs besides its node pools, as data (no Pulumi import).

The cluster modules create what this lists and the placement check (infra/placement/) reads it, so
the check sees the same add-ons, StorageClasses and device plugin that `pulumi up` would install.
What a cloud runs on its own (GKE's PD CSI driver, its StorageClasses, its system DaemonSets) is
not listed here: those are cloud facts in infra/placement/clouds.py."""

from __future__ import annotations

from dataclasses import dataclass

from infra.config import StackConfig

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


def cluster_addons(cfg: StackConfig) -> ClusterAddons:
    """The add-ons of this stack's cluster target."""
    return ClusterAddons(managed_addons=(), storage_classes=(),
                         provides_device_plugin=CLOUD_PROVIDES_DEVICE_PLUGIN[cfg.cloud])
