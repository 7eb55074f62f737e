"""The Serve application's status as a metric: kube-state-metrics reads it from the RayService.

KubeRay 1.4.2 exports the RayService's Ready and UpgradeInProgress conditions (metric_names.py), but not the
status of its Serve applications, which is where DEPLOY_FAILED shows (status.activeServiceStatus.
applicationStatuses.<app>.status, apis/ray/v1/rayservice_types.go lines 33-47 and 123-126). kube-state-metrics'
custom resource state config turns that field into a StateSet (docs/metrics/extend/
customresourcestate-metrics.md at v2.20.0, "StateSet"); it needs list/watch on the resource (same doc, "RBAC-
enabled Clusters"). A StateSet cannot iterate a map's keys (the doc: labelFromKey "is not supported for
StateSet"), so the path names our application."""

from __future__ import annotations

from infra.observability.metric_names import RAYSERVICE_APP_STATUS_METRIC

CUSTOM_RESOURCE_PREFIX = "kube_customresource_"
# Ray Serve's application states, as KubeRay 1.4.2 lists them (rayservice_types.go ApplicationStatusEnum).
APPLICATION_STATES = ("NOT_STARTED", "DEPLOYING", "RUNNING", "DEPLOY_FAILED", "DELETING", "UNHEALTHY")
STATUS_LABEL = "status"
APPLICATION_LABEL = "application"


def custom_resource_state(application: str) -> dict:
    """kube-state-metrics' CustomResourceStateMetrics config: the active cluster's status of `application`."""
    return {
        "kind": "CustomResourceStateMetrics",
        "spec": {"resources": [{
            "groupVersionKind": {"group": "ray.io", "version": "v1", "kind": "RayService"},
            "labelsFromPath": {"name": ["metadata", "name"], "namespace": ["metadata", "namespace"]},
            "metrics": [{
                "name": RAYSERVICE_APP_STATUS_METRIC.removeprefix(CUSTOM_RESOURCE_PREFIX),
                "help": "Status of the RayService's Serve application on its active cluster",
                "commonLabels": {APPLICATION_LABEL: application},
                "each": {"type": "StateSet", "stateSet": {
                    "labelName": STATUS_LABEL,
                    "path": ["status", "activeServiceStatus", "applicationStatuses", application, "status"],
                    "list": list(APPLICATION_STATES)}},
            }],
        }]},
    }


# kube-state-metrics chart 8.4.0 values.yaml lines 94-119 (rbac.extraRules) and 484-499 (customResourceState).
RAYSERVICE_READ_RULE = {"apiGroups": ["ray.io"], "resources": ["rayservices"], "verbs": ["list", "watch"]}
