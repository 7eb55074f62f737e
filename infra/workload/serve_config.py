"""Ray Serve's application config (serveConfigV2) for the vLLM server, built as data."""

from __future__ import annotations

import yaml

from infra.config import StackConfig
from infra.nodepool import replicas_per_node, worker_share
from infra.preflight.ingress_limits import LIMITS
from infra.workload.pods import API_KEY_FILE
from infra.workload.upgrade import serve_max_replicas
from infra.workload.spec import MODEL_CACHE_PATH, VLLM_METRICS_PORT, WorkloadSpec

SERVE_IMPORT_PATH = "qwen2vl_serve.app:build_app"
# Loading 40 GB of weights over 4 GPUs takes many minutes; the replica reports healthy only when
# vLLM's /health answers, and Serve must not kill it while it loads.
HEALTH_CHECK_PERIOD_S = 10
HEALTH_CHECK_TIMEOUT_S = 30
GRACEFUL_SHUTDOWN_TIMEOUT_S = 60
# Serve's own defaults (ray/serve/config.py:70-72), written out because docs/operations.md adds them
# up: an idle replica goes after DOWNSCALE_DELAY_S, then its worker pod and node (upgrade/scaling docs).
UPSCALE_DELAY_S = 30
DOWNSCALE_DELAY_S = 600
# Ray CPUs a replica reserves (the API server and the engine's driver), within its worker's share.
REPLICA_CPUS = 4


def vllm_server_args(spec: WorkloadSpec) -> dict:
    """Arguments of the Serve application: vLLM's OpenAI server flags, as data."""
    cfg = spec.cfg
    if spec.model_lock:
        # The init container fetched and verified the locked files; vLLM loads them from disk.
        source = {"model": spec.model_dir}
    else:
        source = {"model": cfg.model_repo, "revision": cfg.model_revision,
                  "download_dir": f"{MODEL_CACHE_PATH}/huggingface"}
    args = {
        **source,
        "served_model_name": cfg.served_model_name,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "max_model_len": cfg.max_model_len,
        "max_num_seqs": cfg.max_num_seqs,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "dtype": cfg.dtype,
        "api_key_file": API_KEY_FILE,
        # The worker's container port vllm-metrics; the replica serves vLLM's /metrics there.
        "metrics_port": VLLM_METRICS_PORT,
        # The ingress's limits (images/vllm/qwen2vl_serve/request_guard.py).
        "max_request_bytes": cfg.max_request_mib * LIMITS.MIB,
        "max_image_pixels": cfg.max_image_megapixels * LIMITS.MEGAPIXEL,
    }
    # auto lets vLLM pick; none is not a vLLM value (0.6.3.post1 engine/arg_utils.py:450 accepts only
    # QUANTIZATION_METHODS, quantization/__init__.py:32-56), so both pass no flag.
    if cfg.quantization not in ("auto", "none"):
        args["quantization"] = cfg.quantization
    return args


def worker_bounds(cfg: StackConfig) -> tuple[int, int]:
    """(fewest, most) replicas = GPU workers: the pool's node bounds times the replicas one node holds."""
    per_node = replicas_per_node(cfg)
    return cfg.gpu_nodes_min * per_node, cfg.gpu_nodes_max * per_node


def autoscaling_config(spec: WorkloadSpec) -> dict:
    """GPUs / TP replicas per GPU node, so Serve's replica bounds are the pool's node bounds times that
    (worker_bounds), and the worker group's bounds are the same numbers. A replica is at its
    target when vLLM's batch is full (max_num_seqs running); above it requests queue inside vLLM, so Serve
    asks for another replica and Ray's autoscaler for another worker pod (hence node).
    Ray 2.38 semantics: with 0 running replicas any queued request scales to 1 at once
    (ray/serve/autoscaling_policy.py:104-110); otherwise a decision must hold upscale_delay_s /
    downscale_delay_s (:122-150, defaults ray/serve/config.py:70-72)."""
    cfg = spec.cfg
    fewest, _ = worker_bounds(cfg)
    return {
        "min_replicas": fewest,
        # A new cluster (first deploy, NewCluster upgrade) starts one replica even on a scale-to-zero
        # stack, so KubeRay switches traffic to a warm cluster and the smoke test does not wait twice.
        "initial_replicas": max(1, fewest),
        # Room for an upgrade's second cluster under NewCluster (upgrade.serve_max_replicas).
        "max_replicas": serve_max_replicas(cfg),
        "target_ongoing_requests": cfg.max_num_seqs,
        "upscale_delay_s": UPSCALE_DELAY_S,
        "downscale_delay_s": DOWNSCALE_DELAY_S,
    }


def serve_config(spec: WorkloadSpec) -> dict:
    cfg = spec.cfg
    return {
        "applications": [
            {
                "name": spec.name,
                "route_prefix": "/",
                "import_path": SERVE_IMPORT_PATH,
                "args": vllm_server_args(spec),
                "deployments": [
                    {
                        "name": "VLLMServer",
                        "autoscaling_config": autoscaling_config(spec),
                        "max_ongoing_requests": 4 * cfg.max_num_seqs,
                        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
                        "health_check_timeout_s": HEALTH_CHECK_TIMEOUT_S,
                        "graceful_shutdown_timeout_s": GRACEFUL_SHUTDOWN_TIMEOUT_S,
                        # The replica owns its worker's TP GPUs; vLLM's TP workers run in its child processes.
                        "ray_actor_options": {"num_cpus": min(REPLICA_CPUS, worker_share(cfg).cpu),
                                              "num_gpus": cfg.tensor_parallel_size},
                    }
                ],
            }
        ]
    }


def serve_config_yaml(spec: WorkloadSpec) -> str:
    return yaml.safe_dump(serve_config(spec), sort_keys=False)
