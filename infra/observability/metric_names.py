"""The metric names the rules and the dashboard may use, each from the release that exports it.

vLLM's names changed across releases (0.7+ renamed and added series), so the pinned release's own list is
the reference: a rule that names anything else would never fire.
"""

from __future__ import annotations

import re

# vLLM 0.6.3.post1, vllm/engine/metrics.py lines 48-183 (class Metrics): name -> Prometheus type. Every
# series carries the label model_name = the served model name (vllm/engine/llm_engine.py:449).
VLLM_METRICS = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:num_requests_swapped": "gauge",
    "vllm:gpu_cache_usage_perc": "gauge",
    "vllm:cpu_cache_usage_perc": "gauge",
    "vllm:cpu_prefix_cache_hit_rate": "gauge",
    "vllm:gpu_prefix_cache_hit_rate": "gauge",
    "vllm:num_preemptions_total": "counter",
    "vllm:prompt_tokens_total": "counter",
    "vllm:generation_tokens_total": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:time_per_output_token_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_prompt_tokens": "histogram",
    "vllm:request_generation_tokens": "histogram",
    "vllm:request_params_n": "histogram",
    "vllm:request_success_total": "counter",
    "vllm:spec_decode_draft_acceptance_rate": "gauge",
    "vllm:spec_decode_efficiency": "gauge",
    "vllm:spec_decode_num_accepted_tokens_total": "counter",
    "vllm:spec_decode_num_draft_tokens_total": "counter",
    "vllm:spec_decode_num_emitted_tokens_total": "counter",
    "vllm:avg_prompt_throughput_toks_per_s": "gauge",
    "vllm:avg_generation_throughput_toks_per_s": "gauge",
}
VLLM_MODEL_LABEL = "model_name"
VLLM_FINISH_REASON_LABEL = "finished_reason"  # vllm/engine/metrics.py:37

# Ray 2.38 exports its metrics with the "ray_" namespace and counters with a "_total" suffix
# (ray/_private/metrics_agent.py:340-390). Serve's own metrics: ray/serve/_private/proxy.py:174-191
# (serve_num_http_error_requests) and ray/serve/_private/deployment_state.py (serve_deployment_replica_*).
RAY_METRICS = {
    "ray_serve_num_http_requests_total": "counter",
    "ray_serve_num_http_error_requests_total": "counter",
    "ray_serve_deployment_replica_starts_total": "counter",
    "ray_serve_deployment_replica_healthy": "gauge",
}

# kube-state-metrics (installed with the Prometheus operator's usual stack): node capacity per resource,
# with "nvidia.com/gpu" spelled nvidia_com_gpu
# (https://github.com/kubernetes/kube-state-metrics/blob/main/docs/metrics/cluster/node-metrics.md).
KUBE_STATE_METRICS = {"kube_node_status_capacity": "gauge"}

# The KubeRay 1.4.2 operator's own metrics (ray-operator/controllers/ray/metrics/ray_service_metrics.go,
# lines 28-45 and 82-107): one series per RayService with the labels name, namespace and condition
# ("true"/"false", the condition's state), always of value 1. Emitted with --enable-metrics, which the
# chart sets from metrics.enabled (default true; templates/deployment.yaml lines 108-109).
KUBERAY_METRICS = {
    "kuberay_service_condition_ready": "gauge",
    "kuberay_service_condition_upgrade_in_progress": "gauge",
}
KUBERAY_CONDITION_LABEL = "condition"

# kube-state-metrics' custom resource state metrics (docs/metrics/extend/customresourcestate-metrics.md at
# v2.20.0, the version of kube-state-metrics chart 8.4.0 in the pinned kube-prometheus-stack): the default prefix
# kube_customresource_ + the configured name; a StateSet is one series per listed state, 1 for the current
# one. Configured in infra/observability/rayservice_state.py.
RAYSERVICE_APP_STATUS_METRIC = "kube_customresource_rayservice_application_status"
CUSTOM_RESOURCE_STATE_METRICS = {RAYSERVICE_APP_STATUS_METRIC: "gauge"}

KNOWN_METRICS = {**VLLM_METRICS, **RAY_METRICS, **KUBE_STATE_METRICS, **KUBERAY_METRICS,
                 **CUSTOM_RESOURCE_STATE_METRICS}
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("",), "gauge": ("",)}
_PROMQL_WORDS = {"sum", "by", "rate", "irate", "increase", "histogram_quantile", "max", "min", "avg", "count",
                 "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                 "offset", "le", "vector", "clamp_min", "clamp_max", "abs", "time", "absent", "topk"}


def exported_series() -> set[str]:
    """Every series name the known metrics put on the wire."""
    return {name + suffix for name, kind in KNOWN_METRICS.items() for suffix in _SUFFIXES[kind]}


def names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (best effort for the expressions we write: label
    matchers and grouping clauses are removed before the names are collected)."""
    without_labels = re.sub(r"\{[^}]*\}", " ", expr)
    without_groups = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", without_labels)
    without_ranges = re.sub(r"\[[^\]]*\]", " ", without_groups)
    without_strings = re.sub(r"\"[^\"]*\"", " ", without_ranges)
    names = set()
    for token in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_strings):
        if token in _PROMQL_WORDS or re.fullmatch(r"[0-9]", token):
            continue
        names.add(token)
    return names


def unknown_names(expr: str) -> set[str]:
    """Names in `expr` that no pinned release exports."""
    return names_in(expr) - exported_series()
