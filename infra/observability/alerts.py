"""Alert rules for the endpoint, as a PrometheusRule: each alert names what is wrong and where its
runbook is (docs/operations.md, one section per alert)."""

from __future__ import annotations

from dataclasses import dataclass

from infra.config import StackConfig
from infra.observability.metric_names import KUBERAY_CONDITION_LABEL, RAYSERVICE_APP_STATUS_METRIC, VLLM_MODEL_LABEL
from infra.observability.rayservice_state import APPLICATION_LABEL, STATUS_LABEL
from infra.workload.upgrade import upgrade_plan

RUNBOOK = "docs/operations.md#{anchor}"
KV_CACHE_HIGH = 0.90
WAITING_FOR = "5m"
RESTART_WINDOW = "1h"
# Serve's states of an application that no longer serves its config (rayservice_state.py).
FAILED_APP_STATES = ("DEPLOY_FAILED", "UNHEALTHY")


def rayservice_alerts(cfg: StackConfig) -> list["Alert"]:
    """The RayService's own state, from the KubeRay operator's metrics and the RayService's status. An
    upgrade (or, under upgradeStrategy None, a replacement) takes `minutes` by the upgrade plan; either
    alert waits that long plus as much again before it calls the state stuck."""
    rayservice = f'name="{cfg.served_model_name}",namespace="{cfg.namespace}"'
    expected = upgrade_plan(cfg).minutes
    return [
        Alert("Qwen2vlRayServiceNotReady",
              f'max(kuberay_service_condition_ready{{{rayservice},{KUBERAY_CONDITION_LABEL}="false"}}) == 1',
              f"{2 * expected}m", "critical",
              f"RayService {cfg.namespace}/{cfg.served_model_name} has not been Ready for {2 * expected} minutes: "
              "no Serve endpoint answers"),
        Alert("Qwen2vlUpgradeStuck",
              f'max(kuberay_service_condition_upgrade_in_progress{{{rayservice},{KUBERAY_CONDITION_LABEL}="true"}}) == 1',
              f"{2 * expected}m", "warning",
              f"RayService {cfg.namespace}/{cfg.served_model_name} has been upgrading for {2 * expected} minutes "
              f"(about {expected} expected): the new cluster is not serving; KubeRay never gives up on it"),
        Alert("Qwen2vlServeApplicationFailed",
              f'max({RAYSERVICE_APP_STATUS_METRIC}{{{rayservice},{APPLICATION_LABEL}="{cfg.served_model_name}",'
              f'{STATUS_LABEL}=~"{"|".join(FAILED_APP_STATES)}"}}) == 1',
              "5m", "critical",
              f"Serve application {cfg.served_model_name} on the active cluster is "
              f"{' or '.join(FAILED_APP_STATES)}: the last serving config was not deployed"),
    ]


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str

    @property
    def anchor(self) -> str:
        return self.name.lower()

    def as_rule(self) -> dict:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "runbook_url": RUNBOOK.format(anchor=self.anchor)},
        }


def alerts(cfg: StackConfig) -> list[Alert]:
    model = f'{VLLM_MODEL_LABEL}="{cfg.served_model_name}"'
    app = f'application="{cfg.served_model_name}"'
    ttft_p95 = (f"histogram_quantile(0.95, sum by (le) "
                f"(rate(vllm:time_to_first_token_seconds_bucket{{{model}}}[5m])))")
    return [
        Alert("Qwen2vlKvCacheHigh",
              f"max(vllm:gpu_cache_usage_perc{{{model}}}) > {KV_CACHE_HIGH}", "10m", "warning",
              f"KV cache of {cfg.served_model_name} above {KV_CACHE_HIGH:.0%} for 10 minutes: "
              "requests queue or get preempted"),
        Alert("Qwen2vlRequestsWaiting",
              f"sum(vllm:num_requests_waiting{{{model}}}) > 0", WAITING_FOR, "warning",
              f"Requests to {cfg.served_model_name} have waited for a slot for {WAITING_FOR}"),
        Alert("Qwen2vlTimeToFirstTokenHigh",
              f"{ttft_p95} > {cfg.ttft_p95_alert_seconds:g}", "10m", "warning",
              f"p95 time to first token of {cfg.served_model_name} above {cfg.ttft_p95_alert_seconds:g} s "
              "for 10 minutes"),
        # Ray counts every non-200 answer as an error (ray/serve/_private/proxy.py:1005), so clients
        # with a wrong key would page; only server errors do.
        Alert("Qwen2vlFailedRequests",
              f'sum(rate(ray_serve_num_http_error_requests_total{{{app},error_code=~"5.."}}[5m])) > 0',
              "5m", "critical",
              f"{cfg.served_model_name} answers requests with server errors (5xx)"),
        # A start per replica the pool can hold is normal (deploys, scale-out); more within the hour
        # means replicas are being replaced.
        Alert("Qwen2vlReplicaRestarting",
              f"sum(increase(ray_serve_deployment_replica_starts_total{{{app}}}[{RESTART_WINDOW}])) "
              f"> {cfg.gpu_nodes_max}",
              "0m", "critical",
              f"Serve replicas of {cfg.served_model_name} restarted more often than the pool has nodes "
              f"({cfg.gpu_nodes_max}) within {RESTART_WINDOW}"),
        Alert("Qwen2vlGpuPoolAtMaximum",
              f'count(kube_node_status_capacity{{resource="nvidia_com_gpu"}} > 0) >= {cfg.gpu_nodes_max}',
              "30m", "warning",
              f"The GPU pool has run at its maximum of {cfg.gpu_nodes_max} node(s) for 30 minutes: "
              "no headroom for load or an upgrade"),
        *rayservice_alerts(cfg),
    ]


def rule_groups(cfg: StackConfig) -> list[dict]:
    """The `groups` of a Prometheus rule file (what `promtool check rules` reads)."""
    return [{"name": f"{cfg.served_model_name}-serving", "rules": [alert.as_rule() for alert in alerts(cfg)]}]
