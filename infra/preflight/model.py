"""The dimensions the preflight needs, read from a Hugging Face config.json dict."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping


class ModelConfigError(ValueError):
    """config.json lacks a field the preflight needs, or holds a value it cannot use."""


@dataclass(frozen=True)
class Quantization:
    method: str  # "awq", "gptq" or "none" (the checkpoint's format, not the kernel)
    bits: int
    group_size: int  # -1 = one group per output channel
    zero_point: bool
    unquantized_modules: tuple[str, ...]


NO_QUANTIZATION = Quantization("none", 16, -1, False, ())


@dataclass(frozen=True)
class VisionDims:
    depth: int
    embed_dim: int
    mlp_dim: int
    num_heads: int
    merger_dim: int  # embed_dim x spatial_merge_size^2: the merger MLP's width
    out_dim: int  # the language model's hidden size
    patch_params: int  # in_chans x temporal_patch x patch^2, the patch-embedding fan-in


@dataclass(frozen=True)
class ModelDims:
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    vocab: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    torch_dtype: str
    vision: VisionDims | None
    quantization: Quantization

    def with_intermediate(self, intermediate: int) -> "ModelDims":
        return replace(self, intermediate=intermediate)


def _int(config: Mapping[str, Any], key: str, where: str = "") -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelConfigError(f"config.json{where} needs a positive integer {key!r}, got {value!r}")
    return value


def _quantization(config: Mapping[str, Any]) -> Quantization:
    quant = config.get("quantization_config")
    if not quant:
        return NO_QUANTIZATION
    method = str(quant.get("quant_method", "")).lower()
    if method not in ("awq", "gptq"):
        raise ModelConfigError(
            f"quantization_config.quant_method {method!r} is not one the preflight models (awq, gptq)"
        )
    bits = quant.get("bits", quant.get("w_bit"))
    group = quant.get("group_size", quant.get("q_group_size"))
    if not isinstance(bits, int) or not isinstance(group, int):
        raise ModelConfigError("quantization_config needs integer 'bits' and 'group_size'")
    skipped = quant.get("modules_to_not_convert") or ()
    return Quantization(
        method=method,
        bits=bits,
        group_size=group,
        zero_point=bool(quant.get("zero_point", method == "awq")),
        unquantized_modules=tuple(skipped),
    )


def _vision(config: Mapping[str, Any], hidden: int) -> VisionDims | None:
    vision = config.get("vision_config")
    if not vision:
        return None
    where = ".vision_config"
    embed = _int(vision, "embed_dim", where)
    merge = vision.get("spatial_merge_size", 2)
    return VisionDims(
        depth=_int(vision, "depth", where),
        embed_dim=embed,
        mlp_dim=int(embed * vision.get("mlp_ratio", 4)),
        num_heads=_int(vision, "num_heads", where),
        merger_dim=embed * merge * merge,
        out_dim=vision.get("hidden_size", hidden),
        patch_params=vision.get("in_chans", 3)
        * vision.get("temporal_patch_size", 2)
        * vision.get("patch_size", 14) ** 2,
    )


def parse_model_config(config: Mapping[str, Any]) -> ModelDims:
    if not isinstance(config, Mapping):
        raise ModelConfigError("config.json must be a JSON object")
    hidden = _int(config, "hidden_size")
    heads = _int(config, "num_attention_heads")
    kv_heads = config.get("num_key_value_heads", heads)
    if not isinstance(kv_heads, int) or kv_heads <= 0:
        raise ModelConfigError(f"config.json needs a positive integer 'num_key_value_heads', got {kv_heads!r}")
    return ModelDims(
        hidden=hidden,
        intermediate=_int(config, "intermediate_size"),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=config.get("head_dim") or hidden // heads,
        layers=_int(config, "num_hidden_layers"),
        vocab=_int(config, "vocab_size"),
        max_position_embeddings=_int(config, "max_position_embeddings"),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        torch_dtype=str(config.get("torch_dtype") or "float16"),
        vision=_vision(config, hidden),
        quantization=_quantization(config),
    )
