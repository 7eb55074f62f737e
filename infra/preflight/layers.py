"""Every linear layer of a Qwen2-style decoder (and the Qwen2-VL vision tower), per TP rank."""

from __future__ import annotations

from infra.preflight.kernels import LinearPartition, column_parallel, row_parallel
from infra.preflight.model import ModelDims


def kv_heads_per_rank(dims: ModelDims, tp: int) -> int:
    """KV heads each rank holds: vLLM replicates them when tp exceeds their number."""
    return max(1, dims.kv_heads // tp)


def attention_splits(dims: ModelDims, tp: int) -> bool:
    return dims.heads % tp == 0 and (dims.kv_heads % tp == 0 or tp % dims.kv_heads == 0)


def text_layers(dims: ModelDims, tp: int) -> list[LinearPartition]:
    """One decoder layer's linears; every decoder layer has the same shapes."""
    quantized = dims.quantization.method != "none"
    hd = dims.head_dim
    layers = []
    if attention_splits(dims, tp):
        qkv_full = (dims.heads + 2 * dims.kv_heads) * hd
        qkv_rank = (dims.heads // tp + 2 * kv_heads_per_rank(dims, tp)) * hd
        # Head divisibility is the attention checks' business; here only the per-rank width counts.
        layers.append(column_parallel("self_attn.qkv_proj", dims.hidden, (qkv_full,), tp, quantized, qkv_rank))
    layers += [
        row_parallel("self_attn.o_proj", dims.heads * hd, dims.hidden, tp, quantized),
        # gate_proj and up_proj are merged into one column-parallel matrix of 2 x intermediate outputs.
        column_parallel("mlp.gate_up_proj", dims.hidden, (dims.intermediate, dims.intermediate), tp, quantized),
        row_parallel("mlp.down_proj", dims.intermediate, dims.hidden, tp, quantized),
    ]
    return layers


def vision_layers(dims: ModelDims, tp: int, quantized: bool) -> list[LinearPartition]:
    """One vision block's linears plus the patch merger's MLP."""
    v = dims.vision
    if v is None:
        return []
    return [
        column_parallel("visual.blocks.attn.qkv", v.embed_dim, (3 * v.embed_dim,), tp, quantized),
        row_parallel("visual.blocks.attn.proj", v.embed_dim, v.embed_dim, tp, quantized),
        column_parallel("visual.blocks.mlp.fc1", v.embed_dim, (v.mlp_dim,), tp, quantized),
        row_parallel("visual.blocks.mlp.fc2", v.mlp_dim, v.embed_dim, tp, quantized),
        column_parallel("visual.merger.mlp.0", v.merger_dim, (v.merger_dim,), tp, quantized),
        row_parallel("visual.merger.mlp.2", v.merger_dim, v.out_dim, tp, quantized),
    ]
