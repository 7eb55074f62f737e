"""The values our Helm releases pass to their charts, as pure data (no Pulumi import).

The platform components hand these to Helm, and the placement check merges them over the vendored
chart defaults (infra/placement/charts.py) to know which pods the releases create and where they go;
one function per release, so both read the same values."""

from __future__ import annotations

from typing import Any

from infra.nodepool import GPU_PRESENT_LABEL, GPU_TAINT, GpuPlacement
from infra.observability.dashboard import SIDECAR_LABEL
from infra.observability.rayservice_state import RAYSERVICE_READ_RULE, custom_resource_state
from infra.platform.addons import CLUSTER_AUTOSCALER_SERVICE_ACCOUNT
from infra.platform.names import PROMETHEUS_RELEASE_LABEL

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


def kuberay_operator_values(monitoring_release: str | None = None) -> dict:
    """kuberay-operator: requests sized for one RayService; memory limit = request (no overcommit). The
    chart's default limits are {cpu: 100m, memory: 512Mi} (values.yaml lines 181-189) and Helm merges maps,
    so the CPU limit is deleted with a null (the release passes allow_null_values): a 100m limit throttles
    reconciles under load.

    With monitoring on, the chart's ServiceMonitor (templates/servicemonitor.yaml) scrapes the operator's
    /metrics, where it exports kuberay_service_condition_ready and _upgrade_in_progress (metrics.enabled
    defaults to true, values.yaml line 91; controllers/ray/metrics/ray_service_metrics.go at v1.4.2). The
    chart writes `metrics.serviceMonitor.selector` as the ServiceMonitor's labels, so `release: <name>` is
    what kube-prometheus-stack's default serviceMonitorSelector matches (infra/platform/names.py). Its
    honorLabels default (true, values.yaml line 98) keeps the series' own `namespace` label, the RayService's,
    which the alerts select on."""
    values: dict = {"resources": {"requests": {"cpu": "100m", "memory": "512Mi"},
                                  "limits": {"cpu": None, "memory": "512Mi"}}}
    if monitoring_release is not None:
        values["metrics"] = {"enabled": True, "serviceMonitor": {
            "enabled": True, "selector": {PROMETHEUS_RELEASE_LABEL: monitoring_release}}}
    return values


def _requests(cpu: str, memory: str, memory_limit: str | None = None) -> dict:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory_limit or memory}}


# Each component's resources (the chart's defaults are all `{}`, values.yaml lines 1165, 3412, 3561, 4668 and
# the subcharts' own), sized for one workload's series: a few thousand (Ray, vLLM, the nodes), 24 h kept.
MONITORING_RESOURCES = {
    "operator": _requests("100m", "128Mi", "256Mi"),
    "prometheus": _requests("200m", "1Gi", "2Gi"),
    "alertmanager": _requests("20m", "64Mi", "128Mi"),
    "grafana": _requests("50m", "256Mi", "512Mi"),
    "kube-state-metrics": _requests("20m", "64Mi", "128Mi"),
    "node-exporter": _requests("20m", "32Mi", "64Mi"),
    "config-reloader": _requests("10m", "32Mi", "64Mi"),
    "grafana-sidecar": _requests("10m", "64Mi", "128Mi"),
}
MONITORING_RETENTION = "24h"


def kube_prometheus_stack_values(application: str) -> dict:
    """kube-prometheus-stack: the operator with its CRDs (crds.enabled defaults to true, line 34), Prometheus
    selecting what carries the release label (PROMETHEUS_RELEASE_LABEL), Grafana whose dashboard sidecar
    loads every ConfigMap labelled grafana_dashboard=1 in every namespace (grafana.sidecar.dashboards:
    enabled true, label grafana_dashboard, labelValue "1", searchNamespace ALL, lines 1536-1542), which is
    our dashboard's label (infra/observability/dashboard.py SIDECAR_LABEL). Everything but node-exporter
    stays on the system pool (no GPU toleration); node-exporter's default tolerations (every NoSchedule
    taint, prometheus-node-exporter 4.56.1 values.yaml lines 471-473) put it on the GPU nodes too, which
    is where the node metrics matter. Storage stays the chart's emptyDir: the metrics are for operating
    the endpoint, not an archive. kube-state-metrics also exports the Serve `application`'s status from the
    RayService (infra/observability/rayservice_state.py)."""
    r = MONITORING_RESOURCES
    (sidecar_label, sidecar_value), = SIDECAR_LABEL.items()
    return {
        "crds": {"enabled": True},
        "prometheusOperator": {"resources": r["operator"],
                               "prometheusConfigReloader": {"resources": r["config-reloader"]}},
        "prometheus": {"prometheusSpec": {"resources": r["prometheus"], "retention": MONITORING_RETENTION}},
        "alertmanager": {"alertmanagerSpec": {"resources": r["alertmanager"]}},
        "grafana": {"resources": r["grafana"],
                    "sidecar": {"resources": r["grafana-sidecar"], "dashboards": {"enabled": True, "label": sidecar_label, "labelValue": sidecar_value,
                                               "searchNamespace": "ALL"}}},
        "kube-state-metrics": {"resources": r["kube-state-metrics"],
                               "rbac": {"extraRules": [RAYSERVICE_READ_RULE]},
                               "customResourceState": {"enabled": True, "config": custom_resource_state(application)}},
        "prometheus-node-exporter": {"resources": r["node-exporter"]},
    }
