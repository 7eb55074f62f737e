"""Every object of the workload, in apply order, as plain dicts."""

from __future__ import annotations

from infra.workload.model_source import model_lock_config_map
from infra.workload.monitoring import dashboard_config_map, pod_monitor, prometheus_rule
from infra.workload.namespace import namespace
from infra.workload.head_recovery import worker_disruption_budget
from infra.workload.network import (api_server_egress_policy, egress_policy, gke_backend_config, gke_managed_certificate,
                                    ingress, network_policy)
from infra.workload.priority import serving_priority_class
from infra.workload.rayservice import rayservice
from infra.workload.smoke_job import smoke_job, smoke_role, smoke_role_binding, smoke_service_account
from infra.workload.spec import WorkloadSpec
from infra.workload.storage import model_cache_claim


def workload_objects(spec: WorkloadSpec) -> list[dict]:
    """The namespace first, the smoke Job last; Secrets are not here (their values are Pulumi secrets)."""
    objects = [
        namespace(spec),
        model_cache_claim(spec),
        network_policy(spec),
        egress_policy(spec),
        api_server_egress_policy(spec),
        model_lock_config_map(spec),
        serving_priority_class(spec),
        rayservice(spec),
        worker_disruption_budget(spec),
        gke_backend_config(spec),
        gke_managed_certificate(spec),
        ingress(spec),
        pod_monitor(spec),
        prometheus_rule(spec),
        dashboard_config_map(spec),
        smoke_service_account(spec),
        smoke_role(spec),
        smoke_role_binding(spec),
        smoke_job(spec),
    ]
    return [obj for obj in objects if obj is not None]
