"""How clients reach the OpenAI-compatible endpoint: Service, optional Ingress, NetworkPolicy."""

from __future__ import annotations

from infra.workload.spec import DASHBOARD_AGENT_PORT, DASHBOARD_PORT, RAY_METRICS_PORT, SERVE_PORT, WorkloadSpec


def endpoint_service(spec: WorkloadSpec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": spec.metadata(
            spec.endpoint_service,
            "endpoint",
            # vLLM's own Prometheus metrics are served through the endpoint at /metrics.
            annotations={"prometheus.io/scrape": "true", "prometheus.io/port": str(SERVE_PORT),
                         "prometheus.io/path": "/metrics"},
        ),
        "spec": {
            "type": "ClusterIP",
            # Pods that run a Serve proxy carry ray.io/serve=true (set by KubeRay).
            "selector": {**spec.selector, "ray.io/serve": "true"},
            "ports": [{"name": "http", "port": SERVE_PORT, "targetPort": SERVE_PORT, "protocol": "TCP"}],
        },
    }


def ingress(spec: WorkloadSpec) -> dict | None:
    host = spec.cfg.ingress_host
    if not host:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": spec.metadata(spec.name, "endpoint"),
        "spec": {
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": "/v1",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": spec.endpoint_service, "port": {"number": SERVE_PORT}}},
                            }
                        ]
                    },
                }
            ]
        },
    }


def network_policy(spec: WorkloadSpec) -> dict:
    """Ray pods talk freely among themselves; the operator reaches the dashboard; only the namespaces
    and CIDRs in config (and the smoke job) reach the endpoint."""
    port = lambda number: {"protocol": "TCP", "port": number}  # noqa: E731
    same_namespace = {"podSelector": {}}
    operator = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": spec.operator_namespace}}}
    clients = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
        for ns in spec.cfg.allowed_namespaces
    ] + [{"ipBlock": {"cidr": cidr}} for cidr in spec.cfg.allowed_cidrs]
    rules = [
        {"from": [same_namespace]},
        {"from": [operator], "ports": [port(DASHBOARD_PORT), port(DASHBOARD_AGENT_PORT), port(SERVE_PORT)]},
    ]
    if clients:
        rules.append({"from": clients, "ports": [port(SERVE_PORT), port(RAY_METRICS_PORT)]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": spec.metadata(spec.name, "network-policy"),
        "spec": {"podSelector": {"matchLabels": dict(spec.selector)}, "policyTypes": ["Ingress"], "ingress": rules},
    }
