"""The kube-scheduler's Filter plugins that decide here, on plain pod specs and simulated nodes.

Semantics and messages follow kubernetes/kubernetes pkg/scheduler/framework/plugins/:
- noderesources/fit.go (NodeResourcesFit): a pod's request is the sum of its containers and, per
  resource, at least the largest init container ("take max_resource(sum_pod, any_init_container)"),
  plus spec.overhead; it fits when request + the requests of the pods already on the node stay within
  allocatable; "Too many pods" when the node already holds its maxPods. Messages: "Insufficient cpu",
  "Insufficient memory", "Insufficient <extended resource>".
- tainttoleration/taint_toleration.go (TaintToleration): every NoSchedule/NoExecute taint of the node
  must be tolerated; message "node(s) had untolerated taint {key: value}". Matching as in
  k8s.io/api core/v1 toleration.go ToleratesTaint: empty effect matches every effect, operator Exists
  matches any value (and an empty key with Exists matches every taint), Equal compares values.
- nodeaffinity/node_affinity.go (NodeAffinity): spec.nodeSelector (every label equal) and the
  requiredDuringSchedulingIgnoredDuringExecution terms (terms ORed, expressions ANDed; operators In,
  NotIn, Exists, DoesNotExist, Gt, Lt); message "node(s) didn't match Pod's node affinity/selector".
Scoring is not simulated: only whether a node is feasible matters to the question "does it schedule".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.placement.quantity import CPU, MEMORY, amounts, show

SCHEDULING_EFFECTS = ("NoSchedule", "NoExecute")
PODS = "pods"


@dataclass
class Node:
    """One simulated node: its labels, taints, allocatable, and the pods placed on it so far."""

    name: str
    pool: str
    labels: dict[str, str]
    taints: list[dict]
    allocatable: dict[str, int]  # cpu in millicores, memory in bytes, extended resources, "pods"
    pods: list[str] = field(default_factory=list)
    requested: dict[str, int] = field(default_factory=dict)

    def free(self, resource: str) -> int:
        return self.allocatable.get(resource, 0) - self.requested.get(resource, 0)

    def bind(self, pod_name: str, request: dict[str, int]) -> None:
        self.pods.append(pod_name)
        for resource, value in request.items():
            self.requested[resource] = self.requested.get(resource, 0) + value


def container_requests(container: dict) -> dict[str, int]:
    """A container's requests after API defaulting: a resource with a limit and no request requests
    its limit (kubernetes pkg/apis/core/v1/defaults.go SetDefaults_Pod)."""
    resources = container.get("resources") or {}
    return amounts({**(resources.get("limits") or {}), **(resources.get("requests") or {})})


def pod_request(pod_spec: dict) -> dict[str, int]:
    """NodeResourcesFit's computePodResourceRequest: containers summed, init containers as a max."""
    total: dict[str, int] = {}
    for container in pod_spec.get("containers", []):
        for resource, value in container_requests(container).items():
            total[resource] = total.get(resource, 0) + value
    for container in pod_spec.get("initContainers", []):
        for resource, value in container_requests(container).items():
            total[resource] = max(total.get(resource, 0), value)
    for resource, value in amounts(pod_spec.get("overhead")).items():
        total[resource] = total.get(resource, 0) + value
    return {resource: value for resource, value in total.items() if value}


def tolerates(toleration: dict, taint: dict) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint["effect"]:
        return False
    if toleration.get("key") and toleration["key"] != taint["key"]:
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return True
    return toleration.get("value", "") == taint.get("value", "")


def untolerated_taint(pod_spec: dict, node: Node) -> dict | None:
    tolerations = pod_spec.get("tolerations", [])
    for taint in node.taints:
        if taint["effect"] in SCHEDULING_EFFECTS and not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


def _matches_expression(labels: dict[str, str], expression: dict) -> bool:
    key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt"):
        if not present or not labels[key].lstrip("-").isdigit():
            return False
        return int(labels[key]) > int(values[0]) if operator == "Gt" else int(labels[key]) < int(values[0])
    raise ValueError(f"unknown node selector operator {operator!r}")


def matches_node_affinity(pod_spec: dict, labels: dict[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms")
    if not terms:
        return True
    # An empty term matches no node (component-helpers nodeaffinity: "nil or empty term matches no objects").
    return any(term.get("matchExpressions") and all(_matches_expression(labels, e) for e in term["matchExpressions"])
               for term in terms)


def taint_reason(taint: dict) -> str:
    return f"untolerated taint {taint['key']}" + (f"={taint['value']}" if taint.get("value") else "")


def node_reasons(pod_spec: dict, request: dict[str, int], node: Node) -> list[str]:
    """Why this node cannot take the pod ([] = it can), in the scheduler's words with the numbers."""
    if not matches_node_affinity(pod_spec, node.labels):
        return ["didn't match Pod's node affinity/selector"]
    taint = untolerated_taint(pod_spec, node)
    if taint is not None:
        return [taint_reason(taint)]
    reasons = []
    if len(node.pods) + 1 > node.allocatable.get(PODS, 110):
        reasons.append(f"Too many pods (max {node.allocatable.get(PODS)})")
    for resource in fit_order(request):  # fit.go checks cpu, memory, then extended resources
        value, free = request[resource], node.free(resource)
        if value > free:
            reasons.append(f"Insufficient {resource} (requests {show(resource, value)}, "
                           f"free {show(resource, max(free, 0))} of allocatable {show(resource, node.allocatable.get(resource, 0))})")
    return reasons


def fit_order(request: dict[str, int]) -> list[str]:
    return [r for r in (CPU, MEMORY) if r in request] + sorted(r for r in request if r not in (CPU, MEMORY))
