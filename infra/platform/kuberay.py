"""The KubeRay operator, from its pinned Helm chart, in its own namespace, and its CRDs (of the same
version, applied by the program itself: infra/platform/kuberay_crds.py says why)."""

from __future__ import annotations

from typing import Sequence

import pulumi
import pulumi_kubernetes as k8s

from infra import pins
from infra.platform.chart_values import kuberay_operator_values
from infra.platform.kuberay_crds import kuberay_crds
from infra.platform.names import KUBERAY_OPERATOR_NAMESPACE as OPERATOR_NAMESPACE


class KubeRayOperator(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        provider: k8s.Provider,
        after: Sequence[pulumi.Resource],
        protect: bool,
        monitoring_release: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("qwen2vl:platform:KubeRayOperator", name, None, opts)
        base = pulumi.ResourceOptions(parent=self, provider=provider)
        namespace = k8s.core.v1.Namespace(
            "kuberay-namespace",
            metadata={"name": OPERATOR_NAMESPACE, "labels": {"app.kubernetes.io/part-of": "qwen2vl"}},
            opts=pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(depends_on=list(after), protect=protect)),
        )
        # Deleting a CRD deletes every object of its kind in the cluster, other teams' included: a destroy
        # leaves them, as `helm uninstall` does.
        self.crds = [
            k8s.apiextensions.v1.CustomResourceDefinition(
                f"crd-{crd['metadata']['name']}",
                metadata=crd["metadata"],
                spec=crd["spec"],
                opts=pulumi.ResourceOptions.merge(
                    base, pulumi.ResourceOptions(depends_on=list(after), retain_on_delete=True)),
            )
            for crd in kuberay_crds(pins.KUBERAY_OPERATOR_CHART_VERSION)
        ]
        self.release = k8s.helm.v3.Release(
            "kuberay-operator",
            chart=pins.KUBERAY_OPERATOR_CHART,
            version=pins.KUBERAY_OPERATOR_CHART_VERSION,
            repository_opts={"repo": pins.KUBERAY_HELM_REPO},
            namespace=OPERATOR_NAMESPACE,
            skip_crds=True,
            atomic=True,
            timeout=600,
            values=kuberay_operator_values(monitoring_release),
            # Nulls in the values delete chart defaults (the CPU limit, chart_values.py).
            allow_null_values=True,
            opts=pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(depends_on=[namespace, *self.crds])),
        )
        self.namespace = OPERATOR_NAMESPACE
        self.version = pins.KUBERAY_OPERATOR_CHART_VERSION
        self.register_outputs({"namespace": OPERATOR_NAMESPACE, "version": self.version})
