"""The serving pods' PriorityClass: above every pod without one, far below the system-critical classes.

Without it the Ray head and the GPU workers run at priority 0, the lowest on their nodes, so they are
the first pods DefaultPreemption evicts when a system-critical pod (every cloud add-on runs at
system-node-critical or system-cluster-critical) or any other pod of a priority above 0 needs room; a
head restart without GCS fault tolerance reloads the model. With it, pods that set no class (priority
0, for example the KubeRay operator and the Cluster Autoscaler from their charts) are evicted first.

preemptionPolicy Never: the serving pods never evict anyone themselves (a pending upgrade head does not
push the operator off the system node); they only stop being the cheapest victims
(https://kubernetes.io/docs/concepts/scheduling-eviction/pod-priority-preemption/#non-preempting-priority-class).
"""

from __future__ import annotations

from infra.workload.spec import WorkloadSpec

# Above 0 (no class, no globalDefault), far below system-cluster-critical (2000000000), the highest
# value a user class may take being 1000000000 (pkg/apis/scheduling: HighestUserDefinablePriority).
SERVING_PRIORITY = 1_000_000


def priority_class_name(spec: WorkloadSpec) -> str:
    """Cluster-scoped, so the namespace is in the name: two stacks may share an existing cluster."""
    return f"{spec.namespace}-{spec.name}-serving"


def serving_priority_class(spec: WorkloadSpec) -> dict:
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": priority_class_name(spec), "labels": spec.labels("priority")},
        "value": SERVING_PRIORITY,
        "globalDefault": False,
        "preemptionPolicy": "Never",
        "description": "The Ray head and GPU workers serving the model: evicted after pods without a class.",
    }
