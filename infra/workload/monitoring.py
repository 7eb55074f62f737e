"""What Prometheus and Grafana get: a PodMonitor on the pods' private metrics ports (never the public,
key-protected endpoint), the alert rules as a PrometheusRule, and the dashboard as a ConfigMap."""

from __future__ import annotations

import json

import yaml

from infra.observability.alerts import rule_groups
from infra.observability.dashboard import SIDECAR_LABEL, dashboard
from infra.platform.names import PROMETHEUS_RELEASE_LABEL
from infra.workload.spec import WorkloadSpec

# Container port names: Ray's metrics on every Ray pod, vLLM's own on the GPU worker (served by the
# replica without the API key, see images/vllm/qwen2vl_serve).
RAY_METRICS_PORT_NAME = "metrics"
VLLM_METRICS_PORT_NAME = "vllm-metrics"
SCRAPE_INTERVAL = "30s"


def _selected_metadata(spec: WorkloadSpec, name: str, component: str) -> dict:
    """Metadata with the label kube-prometheus-stack's Prometheus selects on (infra/platform/names.py)."""
    metadata = spec.metadata(name, component)
    metadata["labels"][PROMETHEUS_RELEASE_LABEL] = spec.cfg.prometheus_release
    return metadata


def pod_monitor(spec: WorkloadSpec) -> dict | None:
    """Scrapes every Ray pod of the workload on its metrics ports; a pod without one of the named ports
    (the head has no vLLM) contributes no target for it."""
    if not spec.cfg.prometheus_operator:
        return None
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _selected_metadata(spec, f"{spec.name}-ray", "metrics"),
        "spec": {
            "selector": {"matchLabels": dict(spec.selector)},
            "podMetricsEndpoints": [
                {"port": RAY_METRICS_PORT_NAME, "interval": SCRAPE_INTERVAL},
                {"port": VLLM_METRICS_PORT_NAME, "path": "/metrics", "interval": SCRAPE_INTERVAL},
            ],
        },
    }


def prometheus_rule(spec: WorkloadSpec) -> dict | None:
    if not spec.cfg.prometheus_operator:
        return None
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _selected_metadata(spec, f"{spec.name}-alerts", "alerts"),
        "spec": {"groups": rule_groups(spec.cfg)},
    }


MONITORING_KINDS = ("PodMonitor", "PrometheusRule")


def dashboard_config_map(spec: WorkloadSpec) -> dict:
    metadata = spec.metadata(f"{spec.name}-dashboard", "dashboard")
    metadata["labels"].update(SIDECAR_LABEL)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {f"{spec.name}-serving.json": json.dumps(dashboard(spec.cfg), indent=2, sort_keys=True)},
    }


def rule_file(spec: WorkloadSpec) -> str:
    """The rules as a Prometheus rule file, for `promtool check rules` and `promtool test rules`."""
    return yaml.safe_dump({"groups": rule_groups(spec.cfg)}, sort_keys=False)
