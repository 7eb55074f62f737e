"""The Grafana dashboard an operator opens first, built as data: one definition, rendered into a ConfigMap
that Grafana's dashboard sidecar loads."""

from __future__ import annotations

from dataclasses import dataclass

from infra.config import StackConfig
from infra.observability.metric_names import VLLM_FINISH_REASON_LABEL, VLLM_MODEL_LABEL

# Grafana's sidecar (grafana/helm-charts, values `sidecar.dashboards.label`) loads ConfigMaps carrying
# this label; kube-prometheus-stack keeps the chart's default.
SIDECAR_LABEL = {"grafana_dashboard": "1"}
SCHEMA_VERSION = 39
PANEL_WIDTH = 12
PANEL_HEIGHT = 8


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)


def _quantiles(metric: str, selector: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{selector}}}[5m])))", f"p{int(q * 100)}")
        for q in (0.5, 0.95)
    )


def panels(cfg: StackConfig) -> list[Panel]:
    model = f'{VLLM_MODEL_LABEL}="{cfg.served_model_name}"'
    return [
        Panel("Tokens per second", "short", (
            (f"sum(rate(vllm:prompt_tokens_total{{{model}}}[1m]))", "prompt (in)"),
            (f"sum(rate(vllm:generation_tokens_total{{{model}}}[1m]))", "generated (out)"),
        )),
        Panel("Time to first token", "s", _quantiles("vllm:time_to_first_token_seconds", model)),
        Panel("Time per output token", "s", _quantiles("vllm:time_per_output_token_seconds", model)),
        Panel("End-to-end request latency", "s", _quantiles("vllm:e2e_request_latency_seconds", model)),
        Panel("Requests running and waiting", "short", (
            (f"sum(vllm:num_requests_running{{{model}}})", "running"),
            (f"sum(vllm:num_requests_waiting{{{model}}})", "waiting"),
        )),
        Panel("KV cache usage", "percentunit", ((f"max(vllm:gpu_cache_usage_perc{{{model}}})", "GPU KV cache"),)),
        Panel("Preemptions", "short", ((f"sum(rate(vllm:num_preemptions_total{{{model}}}[5m]))", "per second"),)),
        Panel("Finished requests by reason", "reqps", (
            (f"sum by ({VLLM_FINISH_REASON_LABEL}) (rate(vllm:request_success_total{{{model}}}[5m]))",
             f"{{{{{VLLM_FINISH_REASON_LABEL}}}}}"),
        )),
        Panel("GPU nodes", "short", (
            ('count(kube_node_status_capacity{resource="nvidia_com_gpu"} > 0)', "GPU nodes"),
            (f"vector({cfg.gpu_nodes_max})", "pool maximum"),
        )),
    ]


def _panel_json(index: int, panel: Panel) -> dict:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": panel.title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": (index % 2) * PANEL_WIDTH, "y": (index // 2) * PANEL_HEIGHT,
                    "w": PANEL_WIDTH, "h": PANEL_HEIGHT},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + n), "expr": expr, "legendFormat": legend}
            for n, (expr, legend) in enumerate(panel.queries)
        ],
    }


def dashboard(cfg: StackConfig) -> dict:
    return {
        "uid": f"{cfg.served_model_name}-{cfg.stack}-serving"[:40],
        "title": f"{cfg.served_model_name} serving ({cfg.stack})",
        "schemaVersion": SCHEMA_VERSION,
        "editable": False,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus"}]},
        "panels": [_panel_json(i, p) for i, p in enumerate(panels(cfg))],
    }


def expressions(cfg: StackConfig) -> list[str]:
    return [expr for panel in panels(cfg) for expr, _ in panel.queries]
