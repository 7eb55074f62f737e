"""Monitoring where the workload's PodMonitor and PrometheusRule need it: the stack installs the pinned
kube-prometheus-stack on a cluster it made, and on an existing cluster reads the Prometheus operator's CRDs
so that `up` stops before the workload when they are missing."""

from __future__ import annotations

from typing import Sequence

import pulumi
import pulumi_kubernetes as k8s

from infra import pins
from infra.config import StackConfig
from infra.platform.chart_values import kube_prometheus_stack_values
from infra.platform.names import PROMETHEUS_OPERATOR_CRDS


def missing_crds_hint(cfg: StackConfig) -> str:
    """What `up` on an existing cluster needs, in the words of the plan and of the read's name."""
    return (f"prometheusOperator is true on cloud existing: `up` reads the CRDs {', '.join(PROMETHEUS_OPERATOR_CRDS)} "
            f"and fails when one is missing. Install kube-prometheus-stack {pins.KUBE_PROMETHEUS_STACK_CHART_VERSION} "
            f"as release {cfg.prometheus_release} into namespace {cfg.monitoring_namespace} (docs/operations.md), "
            f"or `pulumi config set qwen2vl:prometheusOperator false --stack {cfg.stack}`")


class MonitoringStack(pulumi.ComponentResource):
    """kube-prometheus-stack in monitoringNamespace, under the release name our monitors' label names."""

    def __init__(self, name: str, cfg: StackConfig, provider: k8s.Provider, after: Sequence[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("qwen2vl:platform:MonitoringStack", name, None, opts)
        base = pulumi.ResourceOptions(parent=self, provider=provider)
        namespace = k8s.core.v1.Namespace(
            "monitoring-namespace",
            metadata={"name": cfg.monitoring_namespace, "labels": {"app.kubernetes.io/part-of": "qwen2vl"}},
            opts=pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(depends_on=list(after))),
        )
        self.release = k8s.helm.v3.Release(
            "kube-prometheus-stack",
            # The Prometheus selects on release=<this name>: no random suffix.
            name=cfg.prometheus_release,
            chart=pins.KUBE_PROMETHEUS_STACK_CHART,
            version=pins.KUBE_PROMETHEUS_STACK_CHART_VERSION,
            repository_opts={"repo": pins.KUBE_PROMETHEUS_STACK_HELM_REPO},
            namespace=cfg.monitoring_namespace,
            skip_crds=False,
            atomic=True,
            timeout=900,
            values=kube_prometheus_stack_values(cfg.served_model_name),
            opts=pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(depends_on=[namespace])),
        )
        self.ready: list[pulumi.Resource] = [self.release]
        self.register_outputs({"release": cfg.prometheus_release, "version": pins.KUBE_PROMETHEUS_STACK_CHART_VERSION})


class PrometheusOperatorCrds(pulumi.ComponentResource):
    """Reads (never manages) the Prometheus operator's CRDs of an existing cluster. A missing one fails the
    read, and so `up`, before any workload object (the plan and the `up` log say what to do)."""

    def __init__(self, name: str, cfg: StackConfig, provider: k8s.Provider, after: Sequence[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("qwen2vl:platform:PrometheusOperatorCrds", name, None, opts)
        # Shown beside the read's own "not found" in `up`'s diagnostics: what to do about it.
        pulumi.log.info(missing_crds_hint(cfg), resource=self)
        self.ready: list[pulumi.Resource] = [
            k8s.apiextensions.v1.CustomResourceDefinition.get(
                f"required-{crd}",
                crd,
                opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=list(after)),
            )
            for crd in PROMETHEUS_OPERATOR_CRDS
        ]
        self.register_outputs({"crds": list(PROMETHEUS_OPERATOR_CRDS)})


def monitoring_summary(cfg: StackConfig) -> str:
    """One line for the plan and the stack output: what monitoring this stack gets."""
    if not cfg.prometheus_operator:
        return "off (prometheusOperator false): no monitors, rules or Grafana; the dashboard ConfigMap only"
    if cfg.installs_monitoring:
        return (f"installs kube-prometheus-stack {pins.KUBE_PROMETHEUS_STACK_CHART_VERSION} as release "
                f"{cfg.prometheus_release} in namespace {cfg.monitoring_namespace} (Prometheus operator and CRDs, "
                "Prometheus, Alertmanager, Grafana, kube-state-metrics, node-exporter)")
    return missing_crds_hint(cfg)


def monitoring(cfg: StackConfig, provider: k8s.Provider, after: Sequence[pulumi.Resource]) -> list[pulumi.Resource]:
    """What the workload's monitoring objects and the operator's ServiceMonitor wait for; none when off."""
    if not cfg.prometheus_operator:
        return []
    if cfg.installs_monitoring:
        return MonitoringStack("monitoring", cfg, provider, after).ready
    return PrometheusOperatorCrds("prometheus-operator-crds", cfg, provider, after).ready
