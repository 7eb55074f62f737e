"""The network policies as each cloud's enforcement judges them, not only as the NetworkPolicy API reads.

Two semantics differ from the API's text, and both decide whether the stack works:
- EKS (VPC CNI network-policy agent): eBPF probes on the pod's veth see a connection to a Service before
  kube-proxy's DNAT, so egress is judged against the ClusterIP. The controller adds a ClusterIP to a rule's
  allowed addresses only when the rule's podSelector (in the peer's namespace) is satisfied by the
  Service's selector taken as a label set; headless Services are never added
  (aws/amazon-network-policy-controller-k8s pkg/resolvers/endpoints.go, getMatchingServiceClusterIPs:
  v1.0.2 :318-342, v1.1.7 :451-515, "unable to see the pod IP after the DNAT happens for the
  clusterIPs"). An ipBlock matches the ClusterIP like any address. Ingress is judged at the backend pod.
- GKE Dataplane V2 (Cilium): the Service VIP is translated to a backend pod before policy ("GKE translates
  the Service virtual IP address (VIP) to backend Pod IP addresses before evaluating network policy
  rules", GKE FQDN network policy docs), and a CIDR rule (ipBlock) never matches a pod of the cluster
  (docs.cilium.io network/kubernetes/policy: ipBlock selects addresses outside the cluster, and since
  1.15 optionally nodes; never pods). The managed control plane is outside the cluster: its address gets
  the kube-apiserver identity together with its CIDR labels, so an ipBlock still matches it
  (cilium/cilium#25241, "the IP of kube-apiserver ... does not belong to any of the cluster nodes (e.g.,
  in cloud-provider environments) ... the additional labels represent the CIDR itself and all broader
  CIDRs").
"""

import ipaddress

import pytest

from infra.config import ConfigError
from tests.conftest import make_config
from tests.test_pod import (
    CONFIGURED,
    HUB,
    NAMESPACE,
    SMOKE,
    STRANGER,
    _labels_match,
    pod,
    policies_of,
)

ACTIVE = "qwen2vl-raycluster-x7k2p"


def serving_pod(component, ip):
    """A Ray pod as KubeRay labels it once its Serve proxy may take traffic (common/pod.go labelPod)."""
    return pod(NAMESPACE, {"app.kubernetes.io/instance": "qwen2vl", "app.kubernetes.io/component": component,
                           "ray.io/is-ray-node": "yes", "ray.io/cluster": ACTIVE, "ray.io/serve": "true"}, ip=ip)


HEAD = serving_pod("ray-head", "10.8.1.4")
WORKER = serving_pod("ray-gpu-worker", "10.8.2.9")
KUBE_DNS = pod("kube-system", {"k8s-app": "kube-dns"}, ip="10.8.0.2")
REDIS = pod(NAMESPACE, {"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": "redis"}, ip="10.8.3.3")
# The managed control plane: outside the cluster's pods and nodes on both clouds.
CONTROL_PLANE = {"ip": "172.16.0.2"}
MEMORYSTORE = {"ip": "10.70.0.3"}


def service(namespace, selector, ip, backends, port):
    """A ClusterIP Service whose targetPort equals its port (KubeRay's serve Service leaves targetPort
    unset, so the API server defaults it to the port)."""
    return {"service": True, "namespace": namespace, "selector": selector, "ip": ip, "backends": backends,
            "port": port}


# KubeRay's serve Service: selector {ray.io/cluster: <active>, ray.io/serve: "true"} (common/service.go:198-234).
SERVE_SERVICE = service(NAMESPACE, {"ray.io/cluster": ACTIVE, "ray.io/serve": "true"}, "172.20.14.7",
                        [HEAD, WORKER], 8000)
DNS_SERVICE = service("kube-system", {"k8s-app": "kube-dns"}, "172.20.0.10", [KUBE_DNS], 53)
# `kubernetes` in default has no selector; its endpoints are the control plane's addresses.
API_SERVICE = service("default", None, "172.20.0.1", [CONTROL_PLANE], 443)
REDIS_SERVICE = service(NAMESPACE, {"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": "redis"},
                        "172.20.30.30", [REDIS], 6379)

CLOUDS = ("aws", "gcp")


def _in_block(address, block):
    address = ipaddress.ip_address(address)
    return address in ipaddress.ip_network(block["cidr"]) and not any(
        address in ipaddress.ip_network(e) for e in block.get("except", []))


def _namespace_ok(peer, policy_namespace, namespace):
    if "namespaceSelector" in peer:
        return _labels_match(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
    return namespace == policy_namespace


def _peer_matches(cloud, peer, policy_namespace, other):
    if "ipBlock" in peer:
        if "service" in other:  # EKS, before DNAT: the ClusterIP is an address like any other
            return _in_block(other["ip"], peer["ipBlock"])
        if cloud == "gcp" and "namespace" in other:  # Cilium: CIDR rules never select the cluster's pods
            return False
        return _in_block(other["ip"], peer["ipBlock"])
    if "namespace" not in other:
        return False
    if not _namespace_ok(peer, policy_namespace, other["namespace"]):
        return False
    if "service" in other:  # EKS: the Service's selector, as a label set, must satisfy the podSelector
        return other["selector"] is not None and _labels_match(peer.get("podSelector", {}), other["selector"])
    return _labels_match(peer.get("podSelector", {}), other["labels"])


def _rule_admits(cloud, rule, peers_key, policy_namespace, other, port, protocol):
    peers = rule.get(peers_key)
    if peers is not None and not any(_peer_matches(cloud, p, policy_namespace, other) for p in peers):
        return False
    ports = rule.get("ports")
    return ports is None or any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def _side(cloud, policies, endpoint, direction, other, port, protocol):
    if "labels" not in endpoint:  # outside the cluster, or a Service: no policy selects it
        return True
    rules_key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    selecting = [p for p in policies if p["metadata"]["namespace"] == endpoint["namespace"]
                 and direction in p["spec"]["policyTypes"] and _labels_match(p["spec"]["podSelector"], endpoint["labels"])]
    return not selecting or any(
        _rule_admits(cloud, rule, peers_key, p["metadata"]["namespace"], other, port, protocol)
        for p in selecting for rule in p["spec"].get(rules_key, []))


def connects(policies, source, destination, port, protocol="TCP", *, cloud):
    """Whether `source` opens a connection to `destination` (a pod, an outside address, or a Service)."""
    if "service" not in destination:
        return (_side(cloud, policies, source, "Egress", destination, port, protocol)
                and _side(cloud, policies, destination, "Ingress", source, port, protocol))
    if cloud == "aws":
        return (_side(cloud, policies, source, "Egress", destination, port, protocol)
                and any(_side(cloud, policies, b, "Ingress", source, port, protocol) for b in destination["backends"]))
    return any(connects(policies, source, b, port, protocol, cloud=cloud) for b in destination["backends"])


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize("source, destination, port, protocol", [
    (SMOKE, SERVE_SERVICE, 8000, "TCP"),  # the smoke Job's checks, through KubeRay's serve Service
    (SMOKE, DNS_SERVICE, 53, "UDP"), (WORKER, DNS_SERVICE, 53, "TCP"),
    (SMOKE, API_SERVICE, 443, "TCP"), (HEAD, API_SERVICE, 443, "TCP"),  # report ConfigMap; Ray's autoscaler
    (WORKER, HUB, 443, "TCP"),
])
def test_what_the_stack_needs_connects_on_both_clouds(cloud, source, destination, port, protocol):
    assert connects(policies_of(CONFIGURED), source, destination, port, protocol, cloud=cloud)


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize("source, destination, port", [
    (STRANGER, SERVE_SERVICE, 8000), (WORKER, API_SERVICE, 443), (SMOKE, SERVE_SERVICE, 8265),
])
def test_what_the_policies_refuse_stays_refused_on_both_clouds(cloud, source, destination, port):
    assert not connects(policies_of(CONFIGURED), source, destination, port, cloud=cloud)


def test_the_eks_model_refuses_a_service_whose_selector_the_rule_does_not_name():
    """The EKS semantics bite: the same smoke pod reaches the serve pods directly, but not through a
    Service whose selector the egress rules do not cover."""
    other = service(NAMESPACE, {"app": "something-else"}, "172.20.9.9", [HEAD], 8000)
    policies = policies_of(CONFIGURED)
    assert connects(policies, SMOKE, HEAD, 8000, cloud="aws")
    assert not connects(policies, SMOKE, other, 8000, cloud="aws")
    assert connects(policies, SMOKE, other, 8000, cloud="gcp")


IN_CLUSTER_REDIS = dict(gcsRedisAddress="redis.qwen2vl.svc:6379",
                        gcsRedisPodLabels='{"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": "redis"}')


@pytest.mark.parametrize("cloud", CLOUDS)
def test_an_in_cluster_gcs_redis_is_reachable_on_both_clouds(cloud):
    policies = policies_of(make_config(**IN_CLUSTER_REDIS))
    assert connects(policies, HEAD, REDIS_SERVICE, 6379, cloud=cloud)
    assert not connects(policies, HEAD, REDIS_SERVICE, 6380, cloud=cloud)


@pytest.mark.parametrize("cloud", CLOUDS)
def test_a_gcs_redis_outside_the_cluster_is_reachable_on_both_clouds(cloud):
    policies = policies_of(make_config(gcsRedisAddress="10.70.0.3:6379"))
    assert connects(policies, HEAD, MEMORYSTORE, 6379, cloud=cloud)


def test_an_in_cluster_redis_without_its_labels_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="gcsRedisPodLabels.*GKE.*pulumi config set qwen2vl:gcsRedisPodLabels"):
        make_config(gcsRedisAddress="redis.qwen2vl.svc:6379")
    with pytest.raises(ConfigError, match="gcsRedisPodLabels.*gcsRedisAddress"):
        make_config(gcsRedisPodLabels='{"app": "redis"}')
    with pytest.raises(ConfigError, match="gcsRedisPodLabels"):
        make_config(gcsRedisAddress="redis.qwen2vl.svc:6379", gcsRedisPodLabels='["app"]')
