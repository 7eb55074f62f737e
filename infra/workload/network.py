"""How clients reach the OpenAI-compatible endpoint: KubeRay's serve Service, optional Ingress, NetworkPolicy."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from infra.config import redis_namespace
from infra.workload.spec import DASHBOARD_PORT, RAY_METRICS_PORT, SERVE_PORT, VLLM_METRICS_PORT, WorkloadSpec


def serve_service(spec: WorkloadSpec) -> dict:
    """The endpoint, as RayService spec.serveService: KubeRay creates it, keeps our name, labels, annotations
    and type, and sets its selector itself to ray.io/cluster=<active cluster> and ray.io/serve=true
    (common/service.go:181-262, "ignore any custom ServeService selectors"). It moves the selector to a
    new cluster only once every Serve app there is RUNNING (rayservice_controller.go:166-187, :880-883), so
    clients never reach a cluster that is still loading. Its port is the head's `serve` port (:213-219).
    With a GKE Ingress, the annotations give the load balancer its backend settings (gke_backend_config) and
    make it send to the pods directly (container-native load balancing, for which ClusterIP is enough)."""
    service = {
        "metadata": {"name": spec.endpoint_service, "labels": spec.labels("endpoint")},
        "spec": {"type": "ClusterIP"},
    }
    if spec.cfg.ingress_class_name == GKE_INGRESS_CLASS:
        service["metadata"]["annotations"] = {
            "cloud.google.com/backend-config": json.dumps({"default": spec.endpoint_service}),
            "cloud.google.com/neg": json.dumps({"ingress": True}),
        }
    return service


# GKE's Ingress controller acts on the class annotation, and takes no action on an Ingress that names a
# class only in spec.ingressClassName (https://cloud.google.com/kubernetes-engine/docs/concepts/ingress,
# "GKE Ingress controller behavior"), so the class goes in the annotation.
GKE_INGRESS_CLASS = "gce"
INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
# The only path the Serve app answers without the API key (images/vllm/qwen2vl_serve/access.py OPEN_PATHS):
# the load balancer's default health check, GET /, would get 401 and mark every backend unhealthy.
HEALTH_PATH = "/health"
# The load balancer waits this long for a backend's answer before it returns 502; GKE's default is 30 s
# (https://cloud.google.com/kubernetes-engine/docs/how-to/ingress-configuration, "Backend service timeout"),
# shorter than a long generation. The smoke checks allow a request 600 s too (qwen2vl_serve.smoke).
BACKEND_TIMEOUT_SECONDS = 600
# Google's front ends and health checkers reach the pods from these ranges, for the global external
# Application Load Balancer (https://cloud.google.com/load-balancing/docs/https#firewall-rules and
# https://cloud.google.com/load-balancing/docs/health-check-concepts#ip-ranges).
GKE_LOAD_BALANCER_RANGES = ("130.211.0.0/22", "35.191.0.0/16")


def ingress(spec: WorkloadSpec) -> dict | None:
    """HTTPS only (kubernetes.io/ingress.allow-http false: the API key never crosses plain HTTP), with the
    certificate from ingressTlsSecret or a Google-managed one (gke_managed_certificate)."""
    cfg = spec.cfg
    host = cfg.ingress_host
    if not host:
        return None
    annotations = {INGRESS_CLASS_ANNOTATION: cfg.ingress_class_name, "kubernetes.io/ingress.allow-http": "false"}
    if not cfg.ingress_tls_secret:
        annotations["networking.gke.io/managed-certificates"] = spec.endpoint_service
    backend = {"service": {"name": spec.endpoint_service, "port": {"number": SERVE_PORT}}}
    ingress_spec: dict = {
        "rules": [{"host": host, "http": {"paths": [{"path": "/v1", "pathType": "Prefix", "backend": backend}]}}],
    }
    if cfg.ingress_tls_secret:
        ingress_spec["tls"] = [{"hosts": [host], "secretName": cfg.ingress_tls_secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": spec.metadata(spec.name, "endpoint", annotations=annotations),
        "spec": ingress_spec,
    }


def gke_backend_config(spec: WorkloadSpec) -> dict | None:
    """The load balancer's health check on the open health path of the serve port, and its backend timeout
    (BackendConfig, https://cloud.google.com/kubernetes-engine/docs/how-to/ingress-configuration, "Custom
    health check configuration")."""
    if spec.cfg.ingress_class_name != GKE_INGRESS_CLASS:
        return None
    return {
        "apiVersion": "cloud.google.com/v1",
        "kind": "BackendConfig",
        "metadata": spec.metadata(spec.endpoint_service, "endpoint"),
        "spec": {
            "timeoutSec": BACKEND_TIMEOUT_SECONDS,
            "healthCheck": {"type": "HTTP", "requestPath": HEALTH_PATH, "port": SERVE_PORT,
                            "checkIntervalSec": 15, "timeoutSec": 5, "healthyThreshold": 1, "unhealthyThreshold": 2},
        },
    }


def gke_managed_certificate(spec: WorkloadSpec) -> dict | None:
    """A Google-managed certificate for ingressHost, when no TLS Secret is named
    (https://cloud.google.com/kubernetes-engine/docs/how-to/managed-certs)."""
    cfg = spec.cfg
    if cfg.ingress_class_name != GKE_INGRESS_CLASS or cfg.ingress_tls_secret:
        return None
    return {
        "apiVersion": "networking.gke.io/v1",
        "kind": "ManagedCertificate",
        "metadata": spec.metadata(spec.endpoint_service, "endpoint"),
        "spec": {"domains": [cfg.ingress_host]},
    }


# KubeRay labels every pod of a RayCluster with this (common/pod.go:604), the smoke Job's pod lacks it.
RAY_NODE_LABEL = {"ray.io/is-ray-node": "yes"}
# KubeRay sets the serve Service's selector to {ray.io/cluster: <active>, ray.io/serve: "true"}
# (common/service.go:198-203, :234) and labels each pod whose Serve proxy may take traffic with the second.
SERVE_POD_LABEL = {"ray.io/serve": "true"}
# kube-dns on EKS (CoreDNS) and GKE: Deployment pods labelled k8s-app=kube-dns in kube-system.
DNS_NAMESPACE = "kube-system"
DNS_POD_LABEL = {"k8s-app": "kube-dns"}
# NetworkPolicy cannot match host names (https://kubernetes.io/docs/concepts/services-networking/network-policies/,
# "What you can't do"), so the hub (huggingface.co and its CDNs, a mirror, ModelScope) is "any public
# address" on its port. Excluded: private and shared ranges (the VPC, pod and service CIDRs live there),
# and link-local, where the cloud metadata server (169.254.169.254) would hand out node credentials.
NON_PUBLIC_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16")
# The API server's port behind the `kubernetes` Service: 443 on EKS and GKE, 6443 on kubeadm-made clusters.
API_SERVER_PORTS = (443, 6443)


def _tcp(number: int) -> dict:
    return {"protocol": "TCP", "port": number}


def _namespace(name: str) -> dict:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def _ray_pods(spec: WorkloadSpec) -> dict:
    return {"podSelector": {"matchLabels": {**spec.selector, **RAY_NODE_LABEL}}}


def _smoke_pods(spec: WorkloadSpec) -> dict:
    return {"podSelector": {"matchLabels": {**spec.selector, "app.kubernetes.io/component": "smoke-test"}}}


def _load_balancer_rule(spec: WorkloadSpec) -> list[dict]:
    """With a GKE Ingress: its load balancer's front ends and health checks, on the serve port. Container-native
    load balancing sends from Google's ranges straight to the pod IPs, which the policy sees (Dataplane V2)."""
    if spec.cfg.ingress_class_name != GKE_INGRESS_CLASS:
        return []
    return [{"from": [{"ipBlock": {"cidr": cidr}} for cidr in GKE_LOAD_BALANCER_RANGES], "ports": [_tcp(SERVE_PORT)]}]


def network_policy(spec: WorkloadSpec) -> dict:
    """Who may open a connection to the workload's pods, port by port (docs/pod.md has each reason)."""
    cfg = spec.cfg
    clients = [_namespace(ns) for ns in cfg.allowed_namespaces] + [{"ipBlock": {"cidr": c}} for c in cfg.allowed_cidrs]
    operator = _namespace(spec.operator_namespace)
    rules = [
        # Ray's own traffic (GCS, raylets, object manager, workers' ports, dashboard agents) between its pods.
        {"from": [_ray_pods(spec)]},
        # KubeRay calls the dashboard through the head Service (rayservice_controller.go:1021) and the
        # head's Serve proxy health on its serve port (rayservice_controller.go:1069-1070,
        # utils/httpproxy_httpclient.go:40-55); it uses the agent port only in exec probes (pod.go:341).
        {"from": [operator], "ports": [_tcp(DASHBOARD_PORT), _tcp(SERVE_PORT)]},
        # The endpoint: the configured clients and the smoke Job; the Serve app checks the key.
        {"from": [*clients, _smoke_pods(spec)], "ports": [_tcp(SERVE_PORT)]},
        *_load_balancer_rule(spec),
        # Ray's and vLLM's metrics (no key) for Prometheus alone.
        {"from": [_namespace(cfg.monitoring_namespace)], "ports": [_tcp(RAY_METRICS_PORT), _tcp(VLLM_METRICS_PORT)]},
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": spec.metadata(spec.name, "network-policy"),
        "spec": {"podSelector": {"matchLabels": dict(spec.selector)}, "policyTypes": ["Ingress"], "ingress": rules},
    }


def hub_port(spec: WorkloadSpec) -> int:
    """The port of the configured hub or mirror (hubEndpoint), else HTTPS."""
    if not spec.cfg.hub_endpoint:
        return 443
    url = urlsplit(spec.cfg.hub_endpoint)
    return url.port or (443 if url.scheme == "https" else 80)


def egress_policy(spec: WorkloadSpec) -> dict:
    """Where the workload's pods may connect: DNS, each other, the model hub, the GCS Redis when set."""
    public = {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(NON_PUBLIC_RANGES)}}
    dns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": DNS_NAMESPACE}},
           "podSelector": {"matchLabels": dict(DNS_POD_LABEL)}}
    rules = [
        {"to": [dns], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"to": [{"podSelector": {"matchLabels": dict(spec.selector)}}]},
        # The smoke Job calls the serve Service's ClusterIP. EKS's network-policy agent judges egress before
        # the DNAT to a pod, and its controller admits a Service's ClusterIP only under a rule whose
        # podSelector the Service's selector satisfies as a label set (amazon-network-policy-controller-k8s
        # pkg/resolvers/endpoints.go, getMatchingServiceClusterIPs: v1.0.2 :318-342, v1.1.7 :451-567, the
        # selector check at :508). The rule above ({instance: qwen2vl}) is not satisfied by KubeRay's
        # selector; this one is. On GKE (Dataplane V2) the VIP is translated first and either rule admits it.
        {"to": [{"podSelector": {"matchLabels": dict(SERVE_POD_LABEL)}}], "ports": [_tcp(SERVE_PORT)]},
        {"to": [public], "ports": [_tcp(hub_port(spec))]},
    ]
    if spec.cfg.gcs_redis_address:
        rules.append(_redis_rule(spec))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": spec.metadata(f"{spec.name}-egress", "network-policy"),
        "spec": {"podSelector": {"matchLabels": dict(spec.selector)}, "policyTypes": ["Egress"], "egress": rules},
    }


def _redis_rule(spec: WorkloadSpec) -> dict:
    """Egress to the GCS Redis, on its port only. Cilium (GKE Dataplane V2) never matches a CIDR rule for
    pods in the cluster (docs.cilium.io network/kubernetes/policy: an ipBlock selects addresses outside
    the cluster and, since 1.15 and only if configured, nodes; security/policy/language "IP/CIDR based"),
    so an in-cluster Redis is named
    by its pods' labels and namespace; on EKS those labels must be satisfied by the Redis Service's
    selector, which is why the config asks for that selector. A Redis outside the cluster has only an
    address, unknown here: any address."""
    cfg = spec.cfg
    port = int(cfg.gcs_redis_address.rsplit(":", 1)[1])
    if cfg.gcs_redis_pod_labels is None:
        return {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [_tcp(port)]}
    peer = {**_namespace(redis_namespace(cfg.gcs_redis_address, spec.namespace)),
            "podSelector": {"matchLabels": dict(cfg.gcs_redis_pod_labels)}}
    return {"to": [peer], "ports": [_tcp(port)]}


def api_server_egress_policy(spec: WorkloadSpec) -> dict:
    """The two pods that call the Kubernetes API: the head (Ray's autoscaler sidecar) and the smoke Job
    (its report ConfigMap). The API server's address is not known when the manifests are rendered (EKS
    puts it on private addresses in the VPC), so these two may reach any address on its ports."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": spec.metadata(f"{spec.name}-api-server-egress", "network-policy"),
        "spec": {
            "podSelector": {
                "matchLabels": dict(spec.selector),
                "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In",
                                      "values": ["ray-head", "smoke-test"]}],
            },
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [_tcp(p) for p in API_SERVER_PORTS]}],
        },
    }
