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
- The pod's request (k8s.io/component-helpers resource/helpers.go PodRequests and
  aggregateContainerResourcesByFn, the sidecar formula of KEP-753, on by default since 1.29): containers
  summed; a restartable init container (restartPolicy Always, a "native sidecar") is added to that sum
  and to every later init container's use; the request is the max of the sum and each init container's
  use; then spec.overhead. The RuntimeClass admission plugin copies its class's overhead.podFixed into
  spec.overhead when the pod is created (plugin/pkg/admission/runtimeclass/admission.go setOverhead), so
  a pod naming such a class is charged it too.
- NodeAffinity's terms (k8s.io/component-helpers scheduling/corev1/nodeaffinity/nodeaffinity.go
  nodeSelectorTerm.match): matchExpressions against the node's labels AND matchFields against its fields,
  of which only metadata.name exists; a term with neither matches no node.
Scoring: of the nodes that pass, the scheduler takes the best scored (ties at random,
schedule_one.go selectHost). The default profile's resource score is NodeResourcesFit with the
LeastAllocated strategy on cpu and memory, weight 1 each (pkg/scheduler/apis/config/v1/defaults.go,
noderesources/least_allocated.go: (allocatable - requested) * 100 / allocatable per resource, averaged),
which spreads pods; `least_allocated_score` is that. The other default scores (BalancedAllocation,
PodTopologySpread's system defaults, ImageLocality, preferred affinities) are not simulated.
Priority (DefaultPreemption, pkg/scheduler/framework/plugins/defaultpreemption): a pending pod may evict
pods of strictly lower priority from a node when that makes it fit there; it removes all of them, then
reprieves the most important first while it still fits (selectVictimsOnNode); `preemption_victims`.
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
    # Each bound pod's request and priority, in binding order (for preemption).
    bound: list[tuple[str, dict[str, int], int]] = field(default_factory=list)
    # A node its pool's autoscaler adds only when a pending pod fits nowhere else (the Cluster Autoscaler's
    # scale-up simulates exactly that: a template node of the group, its DaemonSets included).
    standby: bool = False

    def free(self, resource: str) -> int:
        return self.allocatable.get(resource, 0) - self.requested.get(resource, 0)

    def bind(self, pod_name: str, request: dict[str, int], priority: int = 0) -> None:
        self.pods.append(pod_name)
        self.bound.append((pod_name, dict(request), priority))
        for resource, value in request.items():
            self.requested[resource] = self.requested.get(resource, 0) + value


def container_requests(container: dict) -> dict[str, int]:
    """A container's requests after API defaulting: a resource with a limit and no request requests
    its limit (kubernetes pkg/apis/core/v1/defaults.go SetDefaults_Pod)."""
    resources = container.get("resources") or {}
    return amounts({**(resources.get("limits") or {}), **(resources.get("requests") or {})})


def _add(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    return {r: total.get(r, 0) + more.get(r, 0) for r in {*total, *more}}


def pod_request(pod_spec: dict, runtime_classes: dict[str, dict] | None = None) -> dict[str, int]:
    """PodRequests (module doc): containers and native sidecars summed, other init containers as a max
    over their use beside the sidecars started before them, plus the overhead (the pod's own, else its
    RuntimeClass's, `runtime_classes`: name -> RuntimeClass object)."""
    total: dict[str, int] = {}
    for container in pod_spec.get("containers", []):
        total = _add(total, container_requests(container))
    sidecars: dict[str, int] = {}
    init_use: dict[str, int] = {}
    for container in pod_spec.get("initContainers", []):
        own = container_requests(container)
        if container.get("restartPolicy") == "Always":
            total = _add(total, own)
            sidecars = _add(sidecars, own)
            use = sidecars
        else:
            use = _add(own, sidecars)
        init_use = {r: max(init_use.get(r, 0), use.get(r, 0)) for r in {*init_use, *use}}
    total = {r: max(total.get(r, 0), init_use.get(r, 0)) for r in {*total, *init_use}}
    overhead = pod_spec.get("overhead")
    if overhead is None and pod_spec.get("runtimeClassName") in (runtime_classes or {}):
        overhead = ((runtime_classes[pod_spec["runtimeClassName"]].get("overhead") or {}).get("podFixed"))
    total = _add(total, amounts(overhead))
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


def _term_matches(term: dict, labels: dict[str, str], fields: dict[str, str]) -> bool:
    expressions, field_expressions = term.get("matchExpressions") or [], term.get("matchFields") or []
    # An empty term matches no node (component-helpers nodeaffinity: "nil or empty term matches no objects").
    if not expressions and not field_expressions:
        return False
    return (all(_matches_expression(labels, e) for e in expressions)
            and all(_matches_expression(fields, e) for e in field_expressions))


def matches_node_affinity(pod_spec: dict, labels: dict[str, str], node_name: str | None = None) -> bool:
    if any(labels.get(key) != value for key, value in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms")
    if not terms:
        return True
    # A node's only selectable field is its name (nodeaffinity.go: fields.Set{"metadata.name": node.Name}).
    fields = {} if node_name is None else {"metadata.name": node_name}
    return any(_term_matches(term, labels, fields) for term in terms)


def taint_reason(taint: dict) -> str:
    return f"untolerated taint {taint['key']}" + (f"={taint['value']}" if taint.get("value") else "")


def node_reasons(pod_spec: dict, request: dict[str, int], node: Node) -> list[str]:
    """Why this node cannot take the pod ([] = it can), in the scheduler's words with the numbers."""
    if not matches_node_affinity(pod_spec, node.labels, node.name):
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


def least_allocated_score(request: dict[str, int], node: Node) -> float:
    """NodeResourcesFit's default score for placing `request` on `node` (module doc): the mean over cpu
    and memory of the share left free afterwards, 0-100."""
    scores = []
    for resource in (CPU, MEMORY):
        capacity = node.allocatable.get(resource, 0)
        used = node.requested.get(resource, 0) + request.get(resource, 0)
        scores.append(0.0 if not capacity or used > capacity else (capacity - used) * 100 / capacity)
    return sum(scores) / len(scores)


def preemption_victims(node: Node, request: dict[str, int], priority: int) -> list[str] | None:
    """The pods DefaultPreemption would evict from `node` for a pending pod of `priority` needing
    `request`, or None when evicting every lower-priority pod still would not make room (selectVictimsOnNode:
    remove all lower-priority pods; reprieve the most important, then the earliest bound, while it fits)."""
    lower = [(name, req, prio) for name, req, prio in node.bound if prio < priority]
    freed = {r: node.free(r) + sum(req.get(r, 0) for _, req, _ in lower) for r in request}
    if any(request[r] > freed[r] for r in request):
        return None
    victims = []
    for name, req, _ in sorted(lower, key=lambda entry: -entry[2]):
        if all(request[r] <= freed[r] - req.get(r, 0) for r in request):
            freed = {r: freed[r] - req.get(r, 0) for r in request}
        else:
            victims.append(name)
    return victims
