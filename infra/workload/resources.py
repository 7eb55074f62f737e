"""Registers a plain Kubernetes object (a builder's dict) as the matching pulumi-kubernetes resource."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

_TYPED = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "PersistentVolumeClaim"): k8s.core.v1.PersistentVolumeClaim,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("batch/v1", "Job"): k8s.batch.v1.Job,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
    ("networking.k8s.io/v1", "Ingress"): k8s.networking.v1.Ingress,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("scheduling.k8s.io/v1", "PriorityClass"): k8s.scheduling.v1.PriorityClass,
}
_FIELDS = {
    "metadata": "metadata", "spec": "spec", "stringData": "string_data", "type": "type", "rules": "rules",
    "roleRef": "role_ref", "subjects": "subjects", "automountServiceAccountToken": "automount_service_account_token", "data": "data",
    "value": "value", "globalDefault": "global_default", "preemptionPolicy": "preemption_policy", "description": "description",
}


def resource_name(obj: dict) -> str:
    """Logical name: kind and object name, stable across stacks."""
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}"


def register(obj: dict, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    key = (obj["apiVersion"], obj["kind"])
    name = resource_name(obj)
    if key in _TYPED:
        kwargs = {_FIELDS[field]: value for field, value in obj.items() if field in _FIELDS}
        return _TYPED[key](name, opts=opts, **kwargs)
    fields = {field: value for field, value in obj.items() if field not in ("apiVersion", "kind", "metadata")}
    return k8s.apiextensions.CustomResource(
        name, api_version=obj["apiVersion"], kind=obj["kind"], metadata=obj["metadata"], opts=opts, **fields
    )
