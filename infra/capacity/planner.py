"""Every GPU shape that can serve a load, with its predicted throughput, latency and cost, and the cheapest
that meets the goals. Shapes come from the catalog, feasibility from the preflight (kernels, memory) and
the rule that a replica's TP group stays on one node; performance from infra/capacity/performance.py."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from infra import catalog, pins
from infra.capacity.performance import Load, Replica, calibration, operate
from infra.catalog.files import load as load_catalog
from infra.catalog.gpu_zones import gpu_zones
from infra.config import StackConfig
from infra.cost import estimate_cost
from infra.nodepool import node_shape, replicas_per_node
from infra.preflight import PreflightRequest, run_preflight
from infra.preflight.memory import MAX_IMAGE_TOKENS, estimate_memory, text_linear_params
from infra.preflight.model import ModelDims, parse_model_config
from infra.preflight_gate import preflight_request

DEFAULT_REGIONS = {"aws": "us-east-1", "gcp": "us-central1"}
# vLLM's own ceiling on sequences in flight (its default max_num_seqs).
MAX_NUM_SEQS = 256
MIN_MODEL_LEN = 4096
GPU_MEMORY_UTILIZATION = 0.90


@dataclass(frozen=True)
class Goals:
    ttft_p95_s: float | None = None
    tokens_per_s_per_request: float | None = None


@dataclass(frozen=True)
class Constraints:
    clouds: tuple[str, ...] = ("aws", "gcp")
    region: str | None = None
    max_usd_per_hour: float | None = None
    max_nodes: int = 16


@dataclass
class Option:
    cloud: str
    region: str
    gpu: str
    instance_type: str
    gpus_per_node: int
    tp: int
    replicas_per_node: int
    nodes: int
    replicas: int
    autoscaling: dict
    max_model_len: int
    max_num_seqs: int
    usd_per_hour: float
    usd_per_million_output_tokens: float
    predicted: dict
    meets_goals: bool
    price_source: str
    why_not: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def model_len_for(load: Load) -> int:
    """max_model_len: the request's longest context, rounded up to a 1024 multiple, at least MIN_MODEL_LEN."""
    need = load.prompt_tokens + math.ceil(load.images) * MAX_IMAGE_TOKENS + load.output_tokens + 2
    return max(MIN_MODEL_LEN, -(-need // 1024) * 1024)


@lru_cache(maxsize=256)
def _replica_limit(config_json: str, gpu: str, tp: int, max_model_len: int, context_tokens: float) -> int | None:
    """Sequences one replica holds at once (KV cache at the average context, capped by MAX_NUM_SEQS), or
    None when the preflight says vLLM would not serve at this TP on this GPU. (The config comes as JSON text
    so that the answer can be cached.)"""
    config = json.loads(config_json)
    verdict = run_preflight(PreflightRequest(model_config=config, tensor_parallel_size=tp, gpu=gpu,
                                             max_model_len=max_model_len, max_num_seqs=MAX_NUM_SEQS,
                                             gpu_memory_utilization=GPU_MEMORY_UTILIZATION), suggest=False)
    if not verdict.ok:
        return None
    memory = estimate_memory(parse_model_config(config), catalog.gpu(gpu), tp, GPU_MEMORY_UTILIZATION,
                             max_model_len, MAX_NUM_SEQS)
    return max(1, min(MAX_NUM_SEQS, int(memory.kv_tokens // max(context_tokens, 1))))


def _option(cloud: str, region: str, shape: catalog.InstanceShape, tp: int, dims: ModelDims, config_json: str,
            load: Load, rps: float, goals: Goals, constraints: Constraints) -> Option | None:
    price = catalog.on_demand_price(cloud, shape.instance, region)
    if price is None:
        return None
    gpu = catalog.instance_type(cloud, shape.instance).gpu
    max_model_len = model_len_for(load)
    limit = _replica_limit(config_json, gpu, tp, max_model_len, load.context_tokens)
    if limit is None:
        return None
    replica = Replica(dims, catalog.gpu(gpu), tp)
    per_node = shape.gpus // tp
    # The fewest nodes whose replicas carry the load and meet the goals; more nodes only lower each one's load.
    best = None
    for nodes in range(1, constraints.max_nodes + 1):
        state = operate(replica, load, rps / (nodes * per_node), limit)
        meets_load = state.feasible
        meets = meets_load and (goals.ttft_p95_s is None or state.ttft_p95_s <= goals.ttft_p95_s) and (
            goals.tokens_per_s_per_request is None or state.tokens_per_s_per_request >= goals.tokens_per_s_per_request)
        best = (nodes, state, meets_load, meets)
        if meets:
            break
    nodes, state, meets_load, meets = best
    usd = round(nodes * price.usd_per_hour, 4)
    within_budget = constraints.max_usd_per_hour is None or usd <= constraints.max_usd_per_hour
    output_per_s = rps * load.output_tokens if meets_load else 0.0
    why_not = [] if meets_load else [f"{nodes} node(s) cannot carry {rps:g} requests/s"]
    if meets_load and not meets:
        why_not.append("misses the latency goals at the most nodes allowed")
    if not within_budget:
        why_not.append(f"${usd:.2f}/h is over the budget")
    # A GKE pool goes only where the accelerator is offered; a region the zone catalog has not read needs
    # `zones` set by hand (infra/nodepool.py gpu_pool_zones), so the planner does not choose it for you.
    unplaced = cloud == "gcp" and not gpu_zones("gcp", shape.accelerator, price.region)
    if unplaced:
        why_not.append(f"no zone of {price.region} offering {shape.accelerator} in infra/catalog/gpu_zones.yaml")
    return Option(
        cloud=cloud, region=price.region, gpu=gpu, instance_type=shape.instance, gpus_per_node=shape.gpus, tp=tp,
        replicas_per_node=per_node, nodes=nodes, replicas=nodes * per_node,
        autoscaling={"min_nodes": 1, "max_nodes": nodes},
        max_model_len=max_model_len, max_num_seqs=limit,
        usd_per_hour=usd,
        usd_per_million_output_tokens=round(usd / (output_per_s * 3600) * 1e6, 4) if output_per_s else math.inf,
        predicted={
            "output_tokens_per_s": round(output_per_s, 3),
            "capacity_requests_per_s": round(_capacity_rps(replica, load, limit) * nodes * per_node, 4),
            "ttft_p95_s": round(state.ttft_p95_s, 4) if math.isfinite(state.ttft_p95_s) else math.inf,
            "tokens_per_s_per_request": round(state.tokens_per_s_per_request, 3),
            "single_stream_tokens_per_s": round(replica.single_stream_tokens_per_s(load), 3),
            "batch_per_replica": round(state.batch, 2),
            "error_band": calibration().error_band,
        },
        meets_goals=meets and within_budget and not unplaced,
        price_source=price.describe(region),
        why_not=why_not,
    )


def _capacity_rps(replica: Replica, load: Load, limit: int) -> float:
    """The most requests per second one replica carries (bisection on operate's feasibility)."""
    low, high = 0.0, 1.0
    while operate(replica, load, high, limit).feasible and high < 1e6:
        low, high = high, high * 2
    for _ in range(16):
        middle = (low + high) / 2
        low, high = (middle, high) if operate(replica, load, middle, limit).feasible else (low, middle)
    return low


def plan(model_config: dict, load: Load, rps: float, goals: Goals = Goals(),
         constraints: Constraints = Constraints()) -> dict:
    """{"options": [...], "chosen": {...} or None}: every shape and TP that serves, cheapest first; chosen is the
    cheapest that meets the goals within the budget."""
    dims = parse_model_config(model_config)
    key = json.dumps(model_config, sort_keys=True)
    options = []
    for cloud in constraints.clouds:
        region = constraints.region if constraints.region and len(constraints.clouds) == 1 else DEFAULT_REGIONS[cloud]
        for shape in (s for spec in catalog.gpu_catalog().values() for s in spec.shapes_in(cloud)):
            for tp in (t for t in (1, 2, 4, 8) if shape.gpus % t == 0):
                option = _option(cloud, region, shape, tp, dims, key, load, rps, goals, constraints)
                if option is not None:
                    options.append(option)
    options.sort(key=lambda o: (not o.meets_goals, o.usd_per_hour, -o.predicted["capacity_requests_per_s"],
                                o.instance_type, o.tp))
    chosen = next((o for o in options if o.meets_goals), None)
    return {"options": [o.as_dict() for o in options], "chosen": chosen.as_dict() if chosen else None}


def plan_for_model(model: str = pins.MODEL_REPO, **kwargs) -> dict:
    return plan(catalog.catalog_model(model).config_at(None), **kwargs)


# The load a stack's own figures are quoted at (make plan): a chat turn with one image.
REFERENCE_LOAD = Load(prompt_tokens=1000, output_tokens=300, images=1)
# A pool run at this share of its capacity keeps latency near the unloaded figures (the plan quotes it).
TARGET_UTILIZATION = 0.8


def stack_figures(cfg: StackConfig, load: Load = REFERENCE_LOAD) -> dict | None:
    """The planner's figures for a stack's own GPU pool, at gpuNodesMax nodes running TARGET_UTILIZATION of
    their predicted capacity for `load`: what `make plan` prints beside the cost. None on an existing cluster
    (its node shapes are not in the stack config) or for a shape without a published price."""
    shape = node_shape(cfg)
    cost = estimate_cost(cfg)
    if shape is None or cost.max_usd_per_hour is None:
        return None
    dims = parse_model_config(preflight_request(cfg).model_config)
    replica = Replica(dims, cfg.gpu, cfg.tensor_parallel_size)
    memory = estimate_memory(dims, cfg.gpu, cfg.tensor_parallel_size, cfg.gpu_memory_utilization, cfg.max_model_len,
                             cfg.max_num_seqs)
    limit = max(1, min(cfg.max_num_seqs, int(memory.kv_tokens // max(load.context_tokens, 1))))
    per_node = replicas_per_node(cfg)
    replicas = per_node * cost.max_nodes
    capacity = _capacity_rps(replica, load, limit) * replicas
    rps = capacity * TARGET_UTILIZATION
    state = operate(replica, load, rps / replicas, limit)
    output_per_s = rps * load.output_tokens
    return {
        "gpu": cfg.gpu_type, "instance_type": shape.instance, "tp": cfg.tensor_parallel_size,
        "replicas_per_node": per_node, "nodes": cost.max_nodes, "replicas": replicas,
        "usd_per_hour": cost.max_usd_per_hour,
        "usd_per_million_output_tokens": round(cost.max_usd_per_hour / (output_per_s * 3600) * 1e6, 4),
        "load": asdict(load) | {"requests_per_s": round(rps, 4), "share_of_capacity": TARGET_UTILIZATION},
        "predicted": {
            "output_tokens_per_s": round(output_per_s, 3),
            "capacity_requests_per_s": round(capacity, 4),
            "ttft_p95_s": round(state.ttft_p95_s, 4),
            "tokens_per_s_per_request": round(state.tokens_per_s_per_request, 3),
            "single_stream_tokens_per_s": round(replica.single_stream_tokens_per_s(load), 3),
            "error_band": calibration().error_band,
        },
    }


def describe_figures(figures: dict) -> str:
    """One line for people (the plan's summary and scripts/capacity.py)."""
    p, load = figures["predicted"], figures.get("load", {})
    at = (f"at {load['requests_per_s']:g} req/s of {load['prompt_tokens']}+{load['output_tokens']} tokens"
          f"{' and ' + format(load['images'], 'g') + ' image(s)' if load.get('images') else ''}" if load else "")
    return (f"{figures['replicas']} replica(s) ({figures['replicas_per_node']}/node x {figures['nodes']} "
            f"{figures['instance_type']}, TP {figures['tp']}), capacity {p['capacity_requests_per_s']:g} req/s; "
            f"{at.strip()}: {p['output_tokens_per_s']:g} output tok/s, "
            f"TTFT p95 {p['ttft_p95_s']:.2f} s, {p['tokens_per_s_per_request']:.0f} tok/s per request, "
            f"${figures['usd_per_million_output_tokens']:.2f} per million output tokens "
            f"(performance model, +/-{p['error_band']:.0%})")


def published_comparison() -> list[dict]:
    """Each published measurement of performance.yaml beside the model's prediction for it, with the error."""
    data = load_catalog("performance")
    rows = []
    for row in data["published"]:
        config = data["reference_models"].get(row["config"]) or catalog.catalog_model(row["config"]).config_at(None)
        replica = Replica(parse_model_config(config), catalog.gpu(row["gpu"]), row["tp"])
        predicted = replica.single_stream_tokens_per_s(Load(prompt_tokens=512, output_tokens=256))
        rows.append({**row, "predicted_tokens_per_s": round(predicted, 1),
                     "error": round(predicted / row["tokens_per_s"] - 1, 3)})
    return rows


def measured_comparison() -> list[dict]:
    """The H200's measured decode-step linear layers (performance.yaml measured_decode_steps) beside the model's
    bandwidth term for the same bytes: one GPU's share of the 72B's fp16 linear weights over derated bandwidth."""
    data = load_catalog("performance")
    measured = json.loads((Path(__file__).resolve().parents[2] / data["measured_decode_steps"]).read_text())
    gpu = catalog.gpu(data["measured_gpu"])
    dims = parse_model_config(catalog.catalog_model("Qwen/Qwen2-VL-72B-Instruct").config_at(None))
    rows = []
    for step in measured["decode_steps"]:
        weights = text_linear_params(dims) * 2 / step["tp"]
        predicted_ms = weights / (gpu.memory_bandwidth_gbs * 1e9 * calibration().memory_bandwidth) * 1000
        rows.append({**step, "predicted_ms": round(predicted_ms, 2), "error": round(predicted_ms / step["ms"] - 1, 3)})
    return rows
