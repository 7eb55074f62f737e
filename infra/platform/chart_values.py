"""The values our Helm releases pass to their charts, as pure data (no Pulumi import).

The platform components hand these to Helm, and the placement check merges them over the vendored
chart defaults (infra/placement/charts.py) to know which pods the releases create and where they go;
one function per release, so both read the same values."""

from __future__ import annotations

from typing import Any

from infra.nodepool import GPU_PRESENT_LABEL, GPU_TAINT, GpuPlacement
from infra.platform.addons import CLUSTER_AUTOSCALER_SERVICE_ACCOUNT

# Node Feature Discovery's label for a node with an NVIDIA (PCI vendor 10de) device.
NFD_NVIDIA_PCI_LABEL = "feature.node.kubernetes.io/pci-10de.present"


def device_plugin_values(placement: GpuPlacement) -> dict:
    """nvidia-device-plugin: runs only on the GPU pool, through its labels and its taint. The chart's own
    default affinity (values.yaml of the pinned chart) requires NFD labels or nvidia.com/gpu.present=true; we state it
    ourselves: the label our GPU pools carry (GPU_PRESENT_LABEL, infra/nodepool.py), or the NVIDIA PCI label
    of Node Feature Discovery that an existing cluster may have instead. Helm merges maps key by key and
    replaces lists, so nodeSelectorTerms here is the whole list (terms are ORed)."""
    return {
        "nodeSelector": dict(placement.node_selector),
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": GPU_PRESENT_LABEL, "operator": "In", "values": ["true"]}]},
            {"matchExpressions": [{"key": NFD_NVIDIA_PCI_LABEL, "operator": "In", "values": ["true"]}]}]}}},
        "tolerations": [{"key": GPU_TAINT["key"], "operator": "Exists", "effect": GPU_TAINT["effect"]}],
    }


def cluster_autoscaler_values(cluster_name: Any, region: str) -> dict:
    """cluster-autoscaler (EKS): finds the node groups by the tags EKS puts on their Auto Scaling groups,
    k8s.io/cluster-autoscaler/enabled and k8s.io/cluster-autoscaler/<cluster name> (the cluster's real,
    generated name); runs as the service account that EKS Pod Identity gives its IAM role; on the system
    pool (no GPU toleration). `cluster_name` may be a Pulumi Output."""
    namespace, account = CLUSTER_AUTOSCALER_SERVICE_ACCOUNT
    return {
        "cloudProvider": "aws",
        "awsRegion": region,
        "autoDiscovery": {"clusterName": cluster_name},
        "rbac": {"serviceAccount": {"create": True, "name": account}},
        "extraArgs": {
            # The GPU pool's node is idle after its pods are gone; scale it away after 10 minutes.
            "scale-down-unneeded-time": "10m",
            "balance-similar-node-groups": "true",
            "skip-nodes-with-system-pods": "false",
        },
        "resources": {"requests": {"cpu": "100m", "memory": "300Mi"}, "limits": {"memory": "300Mi"}},
    }


def kuberay_operator_values() -> dict:
    """kuberay-operator: requests sized for one RayService; memory limit = request (no overcommit)."""
    return {"resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "512Mi"}}}
