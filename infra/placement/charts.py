"""The pods our Helm releases create: the chart's defaults merged with our values, as Helm does.

Merge rule (helm/helm pkg/chartutil/coalesce.go, CoalesceTables): a user value that is a map is merged
key by key into the default map, so `affinity: {}` keeps every default term; a null user value deletes
the key (pulumi-kubernetes passes nulls only with Release(allow_null_values=True)); anything else
replaces the default. The templates render nodeSelector/affinity/tolerations/resources with `with`,
so an empty value renders nothing."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from infra import pins
from infra.nodepool import GpuPlacement
from infra.placement.clouds import FAST_LOADER
from infra.platform.chart_values import (cluster_autoscaler_values, device_plugin_values, kube_prometheus_stack_values,
                                        kuberay_operator_values)

_CHARTS = Path(__file__).with_name("charts.yaml")
DEVICE_PLUGIN = pins.NVIDIA_DEVICE_PLUGIN_CHART
KUBERAY_OPERATOR = pins.KUBERAY_OPERATOR_CHART
CLUSTER_AUTOSCALER = pins.CLUSTER_AUTOSCALER_CHART
MONITORING_STACK = pins.KUBE_PROMETHEUS_STACK_CHART
PINNED = {DEVICE_PLUGIN: pins.NVIDIA_DEVICE_PLUGIN_CHART_VERSION, KUBERAY_OPERATOR: pins.KUBERAY_OPERATOR_CHART_VERSION,
          CLUSTER_AUTOSCALER: pins.CLUSTER_AUTOSCALER_CHART_VERSION,
          MONITORING_STACK: pins.KUBE_PROMETHEUS_STACK_CHART_VERSION}


@dataclass(frozen=True)
class ReleasePods:
    """A release's pods: a DaemonSet (one per matching node) or a Deployment of `replicas`."""

    name: str
    kind: str
    replicas: int
    pod_spec: dict
    source: str


@lru_cache(maxsize=1)
def chart_defaults() -> dict:
    charts = yaml.load(_CHARTS.read_text(), Loader=FAST_LOADER)
    for chart, version in PINNED.items():
        if charts[chart]["version"] != version:
            raise ValueError(f"{_CHARTS.name} describes {chart} {charts[chart]['version']}, but infra/pins.py pins "
                             f"{version}; read the new chart's values.yaml and update {_CHARTS.name}")
    return charts


def coalesce(user: dict, defaults: dict) -> dict:
    """Helm's CoalesceTables(user, defaults): user values win, maps merge, null deletes."""
    merged = copy.deepcopy(user)
    for key, default in defaults.items():
        if key in merged and merged[key] is None:
            del merged[key]
        elif key not in merged:
            merged[key] = copy.deepcopy(default)
        elif isinstance(default, dict) and isinstance(merged[key], dict):
            merged[key] = coalesce(merged[key], default)
    return {key: value for key, value in merged.items() if value is not None}


def _pod_spec(chart: dict, values: dict) -> dict:
    spec = {"containers": [{"name": chart["container"], "resources": values.get("resources") or {}}]}
    for field in ("nodeSelector", "affinity", "tolerations", "priorityClassName"):
        if values.get(field):
            spec[field] = values[field]
    return spec


def release_pods(chart_name: str, values: dict) -> ReleasePods:
    chart = chart_defaults()[chart_name]
    merged = coalesce(values, chart["defaults"])
    return ReleasePods(
        name=f"{chart['namespace']}/{chart_name}",
        kind=chart["kind"],
        replicas=int(merged[chart["replicas_value"]]) if "replicas_value" in chart else chart.get("replicas", 1),
        pod_spec=_pod_spec(chart, merged),
        source=f"chart {chart_name} {chart['version']} defaults + infra/platform/chart_values.py",
    )


def device_plugin_pods(placement: GpuPlacement) -> ReleasePods:
    return release_pods(DEVICE_PLUGIN, device_plugin_values(placement))


def kuberay_operator_pods() -> ReleasePods:
    return release_pods(KUBERAY_OPERATOR, kuberay_operator_values())


def cluster_autoscaler_pods(region: str) -> ReleasePods:
    # The cluster's name only reaches the autoscaler's flags; placement does not depend on it.
    return release_pods(CLUSTER_AUTOSCALER, cluster_autoscaler_values("<cluster>", region))


def _at(values: dict, path: str) -> dict:
    for key in path.split("."):
        values = values.get(key) or {}
    return values


def component_pods(chart_name: str, values: dict, namespace: str) -> list[ReleasePods]:
    """A chart of several workloads (kube-prometheus-stack): one pod per component, each from its own part
    of the merged values, with its sidecars' requests added as containers."""
    chart = chart_defaults()[chart_name]
    merged = coalesce(values, chart["defaults"])
    pods = []
    for component in chart["components"]:
        own = _at(merged, component["values"])
        spec = _pod_spec({"container": component["name"]}, own)
        spec["containers"] += [{"name": sidecar["name"], "resources": _at(merged, sidecar["values"]).get("resources") or {}}
                               for sidecar in component.get("sidecars", [])]
        pods.append(ReleasePods(
            name=f"{namespace}/{component['name']}", kind=component["kind"], replicas=component.get("replicas", 1),
            pod_spec=spec, source=f"chart {chart_name} {chart['version']} defaults + infra/platform/chart_values.py"))
    return pods


def monitoring_stack_pods(namespace: str) -> list[ReleasePods]:
    # The application's name reaches only kube-state-metrics' config; placement does not depend on it.
    return component_pods(MONITORING_STACK, kube_prometheus_stack_values("<application>"), namespace)
