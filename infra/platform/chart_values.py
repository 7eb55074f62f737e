"""The values our Helm releases pass to their charts, as pure data (no Pulumi import).

The platform components hand these to Helm, and the placement check merges them over the vendored
chart defaults (infra/placement/charts.py) to know which pods the releases create and where they go;
one function per release, so both read the same values."""

from __future__ import annotations

from infra.nodepool import GPU_TAINT, GpuPlacement


def device_plugin_values(placement: GpuPlacement) -> dict:
    """nvidia-device-plugin: runs only on the GPU pool, through its labels and its taint."""
    return {
        "nodeSelector": dict(placement.node_selector),
        "tolerations": [{"key": GPU_TAINT["key"], "operator": "Exists", "effect": GPU_TAINT["effect"]}],
    }


def kuberay_operator_values() -> dict:
    """kuberay-operator: requests sized for one RayService; memory limit = request (no overcommit)."""
    return {"resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "512Mi"}}}
