"""The NVIDIA device plugin (pinned Helm chart), which advertises nvidia.com/gpu on GPU nodes."""

from __future__ import annotations

from typing import Sequence

import pulumi
import pulumi_kubernetes as k8s

from infra import pins
from infra.nodepool import GpuPlacement
from infra.platform.chart_values import device_plugin_values


class NvidiaDevicePlugin(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        provider: k8s.Provider,
        placement: GpuPlacement,
        after: Sequence[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("qwen2vl:platform:NvidiaDevicePlugin", name, None, opts)
        self.release = k8s.helm.v3.Release(
            "nvidia-device-plugin",
            chart=pins.NVIDIA_DEVICE_PLUGIN_CHART,
            version=pins.NVIDIA_DEVICE_PLUGIN_CHART_VERSION,
            repository_opts={"repo": pins.NVIDIA_DEVICE_PLUGIN_HELM_REPO},
            namespace="kube-system",
            atomic=True,
            timeout=600,
            values=device_plugin_values(placement),
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=list(after)),
        )
        self.register_outputs({"version": pins.NVIDIA_DEVICE_PLUGIN_CHART_VERSION})
