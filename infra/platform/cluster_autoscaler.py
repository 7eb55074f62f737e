"""Cluster Autoscaler (pinned Helm chart) on EKS: adds a GPU node when a GPU pod is pending and removes
it when idle, between the node group's min and max. GKE's pools scale with GKE's own autoscaler."""

from __future__ import annotations

from typing import Sequence

import pulumi
import pulumi_kubernetes as k8s

from infra import pins
from infra.platform.addons import CLUSTER_AUTOSCALER_SERVICE_ACCOUNT
from infra.platform.chart_values import cluster_autoscaler_values


class ClusterAutoscaler(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        provider: k8s.Provider,
        cluster_name: pulumi.Input[str],
        region: str,
        after: Sequence[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("qwen2vl:platform:ClusterAutoscaler", name, None, opts)
        self.release = k8s.helm.v3.Release(
            "cluster-autoscaler",
            chart=pins.CLUSTER_AUTOSCALER_CHART,
            version=pins.CLUSTER_AUTOSCALER_CHART_VERSION,
            repository_opts={"repo": pins.CLUSTER_AUTOSCALER_HELM_REPO},
            namespace=CLUSTER_AUTOSCALER_SERVICE_ACCOUNT[0],
            atomic=True,
            timeout=600,
            values=cluster_autoscaler_values(cluster_name, region),
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=list(after)),
        )
        self.register_outputs({"version": pins.CLUSTER_AUTOSCALER_CHART_VERSION})
