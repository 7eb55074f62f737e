"""Prometheus scraping through the Prometheus operator (when its CRDs are installed)."""

from __future__ import annotations

from infra.workload.spec import WorkloadSpec


def service_monitor(spec: WorkloadSpec) -> dict | None:
    if not spec.cfg.prometheus_operator:
        return None
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": spec.metadata(spec.name, "metrics"),
        "spec": {
            "selector": {"matchLabels": spec.labels("endpoint")},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
        },
    }


def pod_monitor(spec: WorkloadSpec) -> dict | None:
    """Ray's own metrics on every Ray pod."""
    if not spec.cfg.prometheus_operator:
        return None
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": spec.metadata(f"{spec.name}-ray", "metrics"),
        "spec": {
            "selector": {"matchLabels": dict(spec.selector)},
            "podMetricsEndpoints": [{"port": "metrics", "interval": "30s"}],
        },
    }
