"""Per-GPU memory: weights, activation reserve and KV cache, the way vLLM budgets them.

vLLM allocates `gpu_memory_utilization x total` per GPU, loads the weights, runs one profiling
forward pass at the largest batch it will schedule, and gives what is left to the KV cache. The
activation reserve here is an estimate of that profiling peak (documented in docs/preflight.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from infra.catalog import GpuSpec
from infra.preflight.ingress_limits import LIMITS
from infra.preflight.layers import kv_heads_per_rank
from infra.preflight.model import ModelDims

GIB = 1024**3
FP16_BYTES = 2
SCALE_BYTES = 2  # one float16 scale per group
# CUDA context, cuBLAS workspaces and (with tp > 1) NCCL buffers, measured outside torch's allocator.
RUNTIME_OVERHEAD_GIB = 0.75
NCCL_OVERHEAD_GIB = 0.25
# vLLM 0.6.x schedules at most max(max_model_len, 2048) tokens per step without chunked prefill, and at
# least 5120 for a multimodal model (vllm/config.py:1003, 1012-1016 `_MULTIMODAL_MODEL_MAX_NUM_BATCHED_TOKENS`).
MIN_BATCHED_TOKENS = 2048
MIN_MULTIMODAL_BATCHED_TOKENS = 5120
KV_BLOCK_TOKENS = 16


# vLLM 0.6.3 profiles one image of its largest size per sequence (qwen2_vl.py:636-647, 1225 tokens), and the
# ingress resizes every image so that Qwen2-VL's processor gives it at most that many tokens: one number,
# images/vllm/qwen2vl_serve/limits.py MAX_IMAGE_TOKENS.
MAX_IMAGE_TOKENS = LIMITS.MAX_IMAGE_TOKENS
# Qwen2-VL registers a maximum for images and for videos, one of each per prompt by default
# (qwen2_vl.py:857-859; vllm/multimodal/registry.py:192-194, 225-229), so the profile budgets both.
PROFILED_MM_TOKENS_PER_SEQ = 2 * MAX_IMAGE_TOKENS


def profiled_sequences(dims: ModelDims, max_model_len: int, max_num_seqs: int) -> int:
    """How many sequences vLLM 0.6.3's profiling pass runs: for a multimodal model
    min(max_num_seqs, max_num_batched_tokens // max_mm_tokens), at least 1, each with one largest image
    (vllm/worker/model_runner.py:1238-1250, the dummy data of qwen2_vl.py:660-697)."""
    if dims.vision is None:
        return max_num_seqs
    return max(1, min(max_num_seqs, batched_tokens(dims, max_model_len) // PROFILED_MM_TOKENS_PER_SEQ))


def batched_tokens(dims: ModelDims, max_model_len: int) -> int:
    floor = MIN_MULTIMODAL_BATCHED_TOKENS if dims.vision is not None else MIN_BATCHED_TOKENS
    return max(max_model_len, floor)


@dataclass(frozen=True)
class MemoryEstimate:
    gpu_memory_gib: float
    budget_gib: float  # gpu_memory_utilization x total
    weights_gib: float
    activation_reserve_gib: float
    kv_cache_gib: float
    kv_bytes_per_token: int
    kv_tokens: int
    max_model_len: int
    concurrent_full_sequences: int

    def as_dict(self) -> dict:
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in asdict(self).items()}


# How people read each field of MemoryEstimate (the plan and the preflight command print the same table).
MEMORY_LABELS = {
    "gpu_memory_gib": "GPU memory (GiB)",
    "budget_gib": "vLLM budget: gpu_memory_utilization x memory (GiB)",
    "weights_gib": "weights per GPU (GiB)",
    "activation_reserve_gib": "activation reserve, estimated (GiB)",
    "kv_cache_gib": "KV cache (GiB)",
    "kv_bytes_per_token": "KV bytes per token per GPU",
    "kv_tokens": "KV cache capacity (tokens)",
    "max_model_len": "max_model_len",
    "concurrent_full_sequences": "concurrent max_model_len sequences",
}


def quantized_bytes_per_param(dims: ModelDims) -> float:
    q = dims.quantization
    if q.method == "none":
        return FP16_BYTES
    group = q.group_size if q.group_size > 0 else dims.hidden
    zero_bytes = q.bits / 8 if q.zero_point else 0
    return q.bits / 8 + (SCALE_BYTES + zero_bytes) / group


def text_linear_params(dims: ModelDims) -> int:
    hd = dims.head_dim
    attention = dims.hidden * (dims.heads + 2 * dims.kv_heads) * hd + dims.heads * hd * dims.hidden
    mlp = 3 * dims.hidden * dims.intermediate
    return dims.layers * (attention + mlp)


def vision_params(dims: ModelDims) -> int:
    v = dims.vision
    if v is None:
        return 0
    block = 4 * v.embed_dim * v.embed_dim + 2 * v.embed_dim * v.mlp_dim
    merger = v.merger_dim * v.merger_dim + v.merger_dim * v.out_dim
    return v.depth * block + merger + v.patch_params * v.embed_dim


def weights_per_gpu_bytes(dims: ModelDims, tp: int) -> float:
    linear = text_linear_params(dims) * quantized_bytes_per_param(dims)
    embeddings = dims.vocab * dims.hidden * FP16_BYTES * (1 if dims.tie_word_embeddings else 2)
    vision = vision_params(dims) * FP16_BYTES
    return (linear + embeddings + vision) / tp


def kv_bytes_per_token(dims: ModelDims, tp: int, dtype_bytes: int = FP16_BYTES) -> int:
    """K and V for every layer, for the KV heads one rank holds."""
    return 2 * dims.layers * kv_heads_per_rank(dims, tp) * dims.head_dim * dtype_bytes


def activation_reserve_bytes(dims: ModelDims, tp: int, max_model_len: int, max_num_seqs: int) -> float:
    tokens = batched_tokens(dims, max_model_len)
    seqs = profiled_sequences(dims, max_model_len, max_num_seqs)
    # Peak of one decoder layer: residual + hidden states, and the MLP's gate/up output and product.
    per_token = (2 * dims.hidden + 3 * dims.intermediate // tp) * FP16_BYTES
    # Sampler logits in float32 with one working copy, for every profiled sequence.
    logits = seqs * dims.vocab * 4 * 2
    vision = 0
    if dims.vision is not None:
        v = dims.vision
        # One largest image per profiled sequence, 2 x 2 patches merging into one token.
        patches = seqs * min(MAX_IMAGE_TOKENS, max_model_len) * 4
        vision = patches * (4 * v.embed_dim + (3 * v.embed_dim + 2 * v.mlp_dim) // tp) * FP16_BYTES
    overhead = RUNTIME_OVERHEAD_GIB + (NCCL_OVERHEAD_GIB if tp > 1 else 0)
    return tokens * per_token + logits + vision + overhead * GIB


def estimate_memory(
    dims: ModelDims, gpu: GpuSpec, tp: int, gpu_memory_utilization: float, max_model_len: int, max_num_seqs: int
) -> MemoryEstimate:
    budget = gpu.memory_gib * GIB * gpu_memory_utilization
    weights = weights_per_gpu_bytes(dims, tp)
    reserve = activation_reserve_bytes(dims, tp, max_model_len, max_num_seqs)
    kv_space = max(0.0, budget - weights - reserve)
    per_token = kv_bytes_per_token(dims, tp)
    # vLLM hands out whole blocks of 16 tokens.
    kv_tokens = int(kv_space // (per_token * KV_BLOCK_TOKENS)) * KV_BLOCK_TOKENS
    return MemoryEstimate(
        gpu_memory_gib=gpu.memory_gib,
        budget_gib=budget / GIB,
        weights_gib=weights / GIB,
        activation_reserve_gib=reserve / GIB,
        kv_cache_gib=kv_space / GIB,
        kv_bytes_per_token=per_token,
        kv_tokens=kv_tokens,
        max_model_len=max_model_len,
        concurrent_full_sequences=kv_tokens // max_model_len,
    )


def largest_fitting_model_len(
    dims: ModelDims, gpu: GpuSpec, tp: int, gpu_memory_utilization: float, max_num_seqs: int, upper: int
) -> int:
    """The largest max_model_len (a multiple of 256, at most `upper`) whose one sequence fits; 0 if none."""
    for length in range(upper - upper % 256, 0, -256):
        est = estimate_memory(dims, gpu, tp, gpu_memory_utilization, length, max_num_seqs)
        if est.kv_tokens >= length:
            return length
    return 0
