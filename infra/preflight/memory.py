"""Per-GPU memory: weights, activation reserve and KV cache, the way vLLM budgets them.

vLLM allocates `gpu_memory_utilization x total` per GPU, loads the weights, runs one profiling
forward pass at the largest batch it will schedule, and gives what is left to the KV cache. The
activation reserve here is an estimate of that profiling peak (documented in docs/preflight.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from infra.preflight.catalog import GpuSpec
from infra.preflight.layers import kv_heads_per_rank
from infra.preflight.model import ModelDims

GIB = 1024**3
FP16_BYTES = 2
SCALE_BYTES = 2  # one float16 scale per group
# CUDA context, cuBLAS workspaces and (with tp > 1) NCCL buffers, measured outside torch's allocator.
RUNTIME_OVERHEAD_GIB = 0.75
NCCL_OVERHEAD_GIB = 0.25
# vLLM 0.6.x schedules at most max(max_model_len, 2048) tokens per step without chunked prefill.
MIN_BATCHED_TOKENS = 2048
# vLLM 0.6.x caps Qwen2-VL images at 1280 x 28 x 28 pixels: 1280 language-model tokens.
MAX_IMAGE_TOKENS = 1280
KV_BLOCK_TOKENS = 16


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
    tokens = max(max_model_len, MIN_BATCHED_TOKENS)
    # Peak of one decoder layer: residual + hidden states, and the MLP's gate/up output and product.
    per_token = (2 * dims.hidden + 3 * dims.intermediate // tp) * FP16_BYTES
    # Sampler logits in float32 with one working copy, for every running sequence.
    logits = max_num_seqs * dims.vocab * 4 * 2
    vision = 0
    if dims.vision is not None:
        v = dims.vision
        patches = min(MAX_IMAGE_TOKENS, max_model_len) * 4  # 2 x 2 patches merge into one token
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
