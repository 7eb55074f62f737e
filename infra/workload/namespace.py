"""The workload's namespace."""

from __future__ import annotations

from infra.workload.spec import WorkloadSpec


def namespace(spec: WorkloadSpec) -> dict:
    labels = spec.labels("namespace")
    # Pod Security admission: the workload runs as non-root with a read-only root filesystem.
    labels["pod-security.kubernetes.io/enforce"] = "restricted"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": spec.namespace, "labels": labels}}
