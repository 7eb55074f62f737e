"""Metrics, alerts and the dashboard: every name is one the pinned releases export, the rules pass the
real promtool (syntax, and unit tests with synthetic series that fire and do not fire each alert), and the
objects reach Prometheus and Grafana from the pods' private metrics ports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from infra.observability.alerts import alerts
from infra.observability.dashboard import SIDECAR_LABEL, expressions
from infra.observability.metric_names import VLLM_METRICS, names_in, unknown_names
from infra.offline.engine import read_stack_config
from infra.workload.manifests import workload_spec
from infra.workload.monitoring import RAY_METRICS_PORT_NAME, VLLM_METRICS_PORT_NAME, rule_file
from infra.workload.objects import workload_objects
from tests.conftest import STACKS, REPO_ROOT, make_config
from tests.vllm_release import pinned_vllm_source

PROMTOOL_HINT = "promtool is missing: `make install-test` (run by make test) unpacks it from Debian's prometheus package"


def promtool() -> str:
    bundled = REPO_ROOT / ".cache" / "bin" / "promtool"
    found = str(bundled) if bundled.exists() else shutil.which("promtool")
    if found is None:
        pytest.fail(PROMTOOL_HINT)
    return found


def alert_config(**extra):
    return make_config(prometheusOperator=True, gpuNodesMax=2, ttftP95AlertSeconds=5, **extra)


def every_expression(cfg) -> list[str]:
    return [alert.expr for alert in alerts(cfg)] + expressions(cfg)


@pytest.mark.parametrize("stack", STACKS)
def test_rules_and_panels_name_only_metrics_the_pinned_releases_export(stack):
    cfg = read_stack_config(stack)
    exprs = every_expression(cfg)
    assert all(names_in(expr) for expr in exprs if not expr.startswith("vector(")), "an expression names no metric"
    assert {expr: unknown_names(expr) for expr in exprs if unknown_names(expr)} == {}


def test_a_metric_that_vllm_0_6_3_does_not_export_is_caught():
    # Both appeared after 0.6.3.post1 (queue time in 0.7, the v1 engine's cache usage in 0.8).
    assert unknown_names('histogram_quantile(0.95, sum by (le) (rate(vllm:request_queue_time_seconds_bucket[5m])))') \
        == {"vllm:request_queue_time_seconds_bucket"}
    assert unknown_names('max(vllm:kv_cache_usage_perc{model_name="qwen2vl"})') == {"vllm:kv_cache_usage_perc"}
    assert unknown_names('sum(rate(vllm:prompt_tokens_total{model_name="q"}[1m]))') == set()


@pytest.mark.download
def test_the_vllm_metric_list_is_the_pinned_releases_own():
    source = pinned_vllm_source("vllm/engine/metrics.py")
    definitions = source.split("# end-metrics-definitions")[0]
    kinds = {"_gauge_cls": "gauge", "_counter_cls": "counter", "_histogram_cls": "histogram"}
    found = {name: kinds[cls] for cls, name in
             re.findall(r"self\.(_gauge_cls|_counter_cls|_histogram_cls)\(\s*name=\"(vllm:[a-z0-9_]+)\"", definitions)}
    assert found == VLLM_METRICS


def test_monitors_scrape_the_private_ports_of_the_pods_never_the_endpoint():
    objects = workload_objects(workload_spec(alert_config()))
    kinds = [obj["kind"] for obj in objects]
    assert "ServiceMonitor" not in kinds
    monitor = next(obj for obj in objects if obj["kind"] == "PodMonitor")
    ports = {endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]}
    assert ports == {RAY_METRICS_PORT_NAME, VLLM_METRICS_PORT_NAME}
    rayservice = next(obj for obj in objects if obj["kind"] == "RayService")
    worker = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert ports <= {port["name"] for port in worker["ports"]}
    # The endpoint is the Service KubeRay makes from spec.serveService: it must not invite scraping.
    assert "Service" not in kinds
    endpoint = rayservice["spec"]["serveService"]
    assert "prometheus.io/scrape" not in endpoint["metadata"].get("annotations", {})


def test_rules_exist_only_with_the_operator_and_the_dashboard_with_every_stack():
    without = [obj["kind"] for obj in workload_objects(workload_spec(make_config()))]
    assert "PrometheusRule" not in without and "PodMonitor" not in without
    dashboards = [obj for obj in workload_objects(workload_spec(make_config()))
                  if obj["metadata"]["labels"].get("grafana_dashboard") == SIDECAR_LABEL["grafana_dashboard"]]
    assert len(dashboards) == 1
    board = json.loads(next(iter(dashboards[0]["data"].values())))
    titles = {panel["title"] for panel in board["panels"]}
    assert {"Tokens per second", "Time to first token", "Time per output token", "End-to-end request latency",
            "Requests running and waiting", "KV cache usage", "Preemptions", "Finished requests by reason",
            "GPU nodes"} <= titles
    for stack in ("staging", "prod"):
        assert read_stack_config(stack).prometheus_operator, f"{stack} must turn the rules on"


def test_every_alert_has_a_runbook_section():
    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
               for line in operations.splitlines() if line.startswith("###")}
    missing = [alert.name for alert in alerts(alert_config()) if alert.anchor not in anchors]
    assert not missing, f"docs/operations.md lacks a '### <AlertName>' runbook section for {missing}"


@pytest.mark.parametrize("stack", STACKS)
def test_promtool_checks_the_rules_of_every_stack(stack, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(rule_file(workload_spec(read_stack_config(stack))))
    proc = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alerts(read_stack_config(stack)))} rules found" in proc.stdout


def _bucket_series(observations_per_minute: dict[str, int]) -> list[dict]:
    """Cumulative TTFT histogram buckets that grow by the given count per minute."""
    series = []
    for le, per_minute in observations_per_minute.items():
        series.append({"series": f'vllm:time_to_first_token_seconds_bucket{{model_name="qwen2vl",le="{le}"}}',
                       "values": f"0+{per_minute}x40"})
    return series


# Per alert: series that make it fire, series that keep it silent, and when to evaluate.
SCENARIOS = {
    "Qwen2vlKvCacheHigh": (
        [{"series": 'vllm:gpu_cache_usage_perc{model_name="qwen2vl"}', "values": "0.97x30"}],
        [{"series": 'vllm:gpu_cache_usage_perc{model_name="qwen2vl"}', "values": "0.80x30"}], "20m"),
    "Qwen2vlRequestsWaiting": (
        [{"series": 'vllm:num_requests_waiting{model_name="qwen2vl"}', "values": "3x30"}],
        [{"series": 'vllm:num_requests_waiting{model_name="qwen2vl"}', "values": "0x30"}], "20m"),
    "Qwen2vlTimeToFirstTokenHigh": (
        # Every first token between 5 and 10 s: p95 about 9.75 s, above the 5 s threshold.
        _bucket_series({"1": 0, "5": 0, "10": 10, "+Inf": 10}),
        _bucket_series({"1": 10, "5": 10, "10": 10, "+Inf": 10}), "30m"),
    "Qwen2vlFailedRequests": (
        [{"series": 'ray_serve_num_http_error_requests_total{application="qwen2vl",error_code="500"}',
          "values": "0+2x30"}],
        # Clients with a wrong key are not a failure of the service.
        [{"series": 'ray_serve_num_http_error_requests_total{application="qwen2vl",error_code="401"}',
          "values": "0+2x30"}], "20m"),
    "Qwen2vlReplicaRestarting": (
        [{"series": 'ray_serve_deployment_replica_starts_total{application="qwen2vl"}', "values": "1+1x30"}],
        [{"series": 'ray_serve_deployment_replica_starts_total{application="qwen2vl"}', "values": "2x30"}], "25m"),
    "Qwen2vlGpuPoolAtMaximum": (
        [{"series": f'kube_node_status_capacity{{resource="nvidia_com_gpu",node="gpu-{n}"}}', "values": "4x60"}
         for n in (1, 2)],
        [{"series": 'kube_node_status_capacity{resource="nvidia_com_gpu",node="gpu-1"}', "values": "4x60"}], "45m"),
    # The KubeRay operator's series (one per RayService and condition state) and kube-state-metrics' StateSet.
    # alert_config's stack (TP 4, min 0) expects 14 minutes for a new cluster, so both wait 28.
    "Qwen2vlRayServiceNotReady": (
        [{"series": 'kuberay_service_condition_ready{name="qwen2vl",namespace="qwen2vl",condition="false"}',
          "values": "1x60"}],
        # Not ready for less than the wait (a replacement), then ready again; another RayService is not ours.
        [{"series": 'kuberay_service_condition_ready{name="qwen2vl",namespace="qwen2vl",condition="false"}',
          "values": "1x20 _x40"},
         {"series": 'kuberay_service_condition_ready{name="qwen2vl",namespace="qwen2vl",condition="true"}',
          "values": "_x20 1x40"},
         {"series": 'kuberay_service_condition_ready{name="other",namespace="team",condition="false"}',
          "values": "1x60"}], "40m"),
    "Qwen2vlUpgradeStuck": (
        [{"series": 'kuberay_service_condition_upgrade_in_progress{name="qwen2vl",namespace="qwen2vl",condition="true"}',
          "values": "1x60"}],
        [{"series": 'kuberay_service_condition_upgrade_in_progress{name="qwen2vl",namespace="qwen2vl",condition="true"}',
          "values": "1x20 _x40"},
         {"series": 'kuberay_service_condition_upgrade_in_progress{name="qwen2vl",namespace="qwen2vl",condition="false"}',
          "values": "_x20 1x40"}], "40m"),
    "Qwen2vlServeApplicationFailed": (
        [{"series": f'kube_customresource_rayservice_application_status{{name="qwen2vl",namespace="qwen2vl",'
                    f'application="qwen2vl",status="{state}"}}', "values": value}
         for state, value in (("DEPLOY_FAILED", "1x30"), ("RUNNING", "0x30"))],
        [{"series": f'kube_customresource_rayservice_application_status{{name="qwen2vl",namespace="qwen2vl",'
                    f'application="qwen2vl",status="{state}"}}', "values": value}
         for state, value in (("DEPLOY_FAILED", "0x30"), ("DEPLOYING", "0x30"), ("RUNNING", "1x30"))], "15m"),
}


def test_every_alert_has_a_scenario():
    assert set(SCENARIOS) == {alert.name for alert in alerts(alert_config())}


def test_promtool_unit_tests_fire_and_silence_each_alert(tmp_path):
    cfg = alert_config()
    (tmp_path / "rules.yaml").write_text(rule_file(workload_spec(cfg)))
    tests = []
    for alert in alerts(cfg):
        firing, silent, at = SCENARIOS[alert.name]
        rule = alert.as_rule()
        expected = [{"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}]
        tests.append({"interval": "1m", "input_series": firing,
                      "alert_rule_test": [{"eval_time": at, "alertname": alert.name, "exp_alerts": expected}]})
        tests.append({"interval": "1m", "input_series": silent,
                      "alert_rule_test": [{"eval_time": at, "alertname": alert.name, "exp_alerts": []}]})
    (tmp_path / "rules_test.yaml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}, sort_keys=False))
    proc = subprocess.run([promtool(), "test", "rules", "rules_test.yaml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_would_catch_a_wrong_scenario(tmp_path):
    """The unit test above can fail: expecting an alert from silent series is reported by promtool."""
    cfg = alert_config()
    (tmp_path / "rules.yaml").write_text(rule_file(workload_spec(cfg)))
    alert = alerts(cfg)[0]
    _, silent, at = SCENARIOS[alert.name]
    rule = alert.as_rule()
    test = {"interval": "1m", "input_series": silent, "alert_rule_test": [{
        "eval_time": at, "alertname": alert.name,
        "exp_alerts": [{"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}]}]}
    (tmp_path / "rules_test.yaml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [test]}, sort_keys=False))
    proc = subprocess.run([promtool(), "test", "rules", "rules_test.yaml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and alert.name in proc.stdout + proc.stderr
