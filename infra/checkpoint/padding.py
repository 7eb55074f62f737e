"""Lossless zero-padding of an AWQ checkpoint's MLP intermediate size.

gate_proj and up_proj gain output channels, down_proj the same number of input rows. Every added
quantized value equals its zero point, so each added weight dequantizes to exactly 0:
(q - z) x s = (0 - 0) x 1 = 0. The MLP's output is unchanged: the new gate/up channels produce
silu(0) x 0 = 0, and the new down_proj rows multiply those zeros.

AWQ "gemm" packing (AutoAWQ), for a linear layer with K inputs, N outputs and group size G:
  qweight int32 [K, N / 8]   eight 4-bit values per int32 along N
  qzeros  int32 [K / G, N / 8]
  scales  fp16  [K / G, N]
A zero int32 packs eight zero nibbles, whatever the nibble order, so padding never reorders values.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import load_file, save_file

PACK = 8  # 4-bit values per int32
MLP_TENSOR = re.compile(r"^(?P<prefix>.*\.mlp)\.(?P<proj>gate_proj|up_proj|down_proj)\.(?P<part>qweight|qzeros|scales)$")
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


class PaddingError(ValueError):
    """The checkpoint is not one this tool can pad exactly; DST is left absent."""


@dataclass(frozen=True)
class Plan:
    intermediate: int
    target: int
    group_size: int
    shards: tuple[str, ...]

    @property
    def extra(self) -> int:
        return self.target - self.intermediate


def read_config(src: Path) -> dict:
    try:
        return json.loads((src / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PaddingError(f"{src}/config.json cannot be read: {exc}") from None


def text_config(config: dict) -> dict:
    """Where intermediate_size lives (top level for Qwen2/Qwen2-VL, text_config for some exports)."""
    return config["text_config"] if "intermediate_size" not in config and "text_config" in config else config


def check_quantization(config: dict) -> int:
    quant = config.get("quantization_config") or {}
    method = str(quant.get("quant_method", "")).lower()
    if method == "gptq":
        if quant.get("desc_act"):
            raise PaddingError("GPTQ with act-order (desc_act: true) reorders input rows by g_idx; padding it is "
                               "not exact in general and this tool refuses it")
        raise PaddingError("GPTQ checkpoints are not supported by this tool (AWQ gemm only); see docs/padding.md")
    if method != "awq":
        raise PaddingError(f"quantization_config.quant_method is {method or 'absent'!r}; this tool pads AWQ checkpoints")
    version = str(quant.get("version", "gemm")).lower()
    if version != "gemm":
        raise PaddingError(f"AWQ packing {version!r} is not supported; only the 'gemm' packing is")
    if quant.get("bits", quant.get("w_bit")) != 4:
        raise PaddingError("only 4-bit AWQ checkpoints are supported")
    if not quant.get("zero_point", True):
        raise PaddingError("AWQ without zero points is not supported")
    group = quant.get("group_size", quant.get("q_group_size"))
    if not isinstance(group, int) or group <= 0:
        raise PaddingError(f"quantization_config.group_size must be a positive integer, got {group!r}")
    return group


def shard_files(src: Path) -> tuple[str, ...]:
    if (src / INDEX).exists():
        index = json.loads((src / INDEX).read_text())
        return tuple(sorted(set(index["weight_map"].values())))
    if (src / SINGLE).exists():
        return (SINGLE,)
    raise PaddingError(f"{src} has neither {INDEX} nor {SINGLE}")


def make_plan(src: Path, target: int) -> Plan:
    config = read_config(src)
    group = check_quantization(config)
    intermediate = text_config(config).get("intermediate_size")
    if not isinstance(intermediate, int):
        raise PaddingError("config.json has no integer intermediate_size")
    if intermediate % group:
        raise PaddingError(f"intermediate_size {intermediate} is not a multiple of the group size {group}: the last "
                           "quantization group of down_proj is partial, which this tool cannot extend exactly")
    if target < intermediate:
        raise PaddingError(f"target {target} is smaller than intermediate_size {intermediate}")
    if target % group or target % PACK:
        raise PaddingError(f"target {target} must be a multiple of the group size {group} and of {PACK}")
    return Plan(intermediate, target, group, shard_files(src))


def pad_tensor(name: str, tensor: np.ndarray, plan: Plan) -> np.ndarray:
    """The padded version of one MLP tensor (validated against the expected shape first)."""
    match = MLP_TENSOR.match(name)
    proj, part = match["proj"], match["part"]
    inter, extra, group = plan.intermediate, plan.extra, plan.group_size
    if proj in ("gate_proj", "up_proj"):
        # N (outputs) = intermediate: the last axis, packed by 8 except for scales.
        width = inter if part == "scales" else inter // PACK
        if tensor.shape[-1] != width:
            raise PaddingError(f"{name} has shape {tensor.shape}; expected last axis {width} for "
                               f"intermediate_size {inter}")
        add = extra if part == "scales" else extra // PACK
        fill = 1 if part == "scales" else 0
        return np.concatenate([tensor, np.full((tensor.shape[0], add), fill, dtype=tensor.dtype)], axis=1)
    # down_proj: K (inputs) = intermediate: the first axis, in rows (qweight) or groups (qzeros, scales).
    rows = inter if part == "qweight" else inter // group
    if tensor.shape[0] != rows:
        raise PaddingError(f"{name} has shape {tensor.shape}; expected first axis {rows} for intermediate_size {inter}")
    add = extra if part == "qweight" else extra // group
    fill = 1 if part == "scales" else 0
    return np.concatenate([tensor, np.full((add, tensor.shape[1]), fill, dtype=tensor.dtype)], axis=0)


def check_complete(names: set[str]) -> None:
    """Every MLP that appears must have all nine tensors (3 projections x qweight/qzeros/scales)."""
    prefixes = {MLP_TENSOR.match(n)["prefix"] for n in names if MLP_TENSOR.match(n)}
    if not prefixes:
        raise PaddingError("no AWQ MLP tensors (*.mlp.{gate,up,down}_proj.{qweight,qzeros,scales}) found")
    for prefix in sorted(prefixes):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            for part in ("qweight", "qzeros", "scales"):
                if f"{prefix}.{proj}.{part}" not in names:
                    raise PaddingError(f"{prefix}.{proj}.{part} is missing from the checkpoint")


def all_tensor_names(src: Path, shards: tuple[str, ...]) -> set[str]:
    if (src / INDEX).exists():
        return set(json.loads((src / INDEX).read_text())["weight_map"])
    from safetensors import safe_open

    with safe_open(src / shards[0], framework="numpy") as handle:
        return set(handle.keys())


def pad_checkpoint(src: Path, dst: Path, target: int,
                   progress: Callable[[str, int, int], None] | None = None) -> Plan:
    """Writes the padded checkpoint to `dst` (which must not exist); `src` is only read.

    Work happens in a sibling temporary folder renamed to `dst` at the end, so a failure leaves no `dst`.
    """
    src, dst = src.resolve(), dst.resolve()
    if dst == src or src in dst.parents:
        raise PaddingError(f"DST {dst} must be outside SRC {src}")
    if dst.exists():
        raise PaddingError(f"DST {dst} already exists; this tool never overwrites")
    plan = make_plan(src, target)
    check_complete(all_tensor_names(src, plan.shards))
    work = dst.with_name(f".{dst.name}.partial-{os.getpid()}")
    work.mkdir(parents=True)
    try:
        total_size = 0
        for number, shard in enumerate(plan.shards, start=1):
            tensors = load_file(src / shard)
            for name in list(tensors):
                if MLP_TENSOR.match(name):
                    tensors[name] = pad_tensor(name, tensors[name], plan)
            total_size += sum(t.nbytes for t in tensors.values())
            save_file(tensors, work / shard, metadata={"format": "pt"})
            del tensors
            if progress:
                progress(shard, number, len(plan.shards))
        if (src / INDEX).exists():
            index = json.loads((src / INDEX).read_text())
            index.setdefault("metadata", {})["total_size"] = total_size
            (work / INDEX).write_text(json.dumps(index, indent=2))
        config = read_config(src)
        text_config(config)["intermediate_size"] = plan.target
        (work / "config.json").write_text(json.dumps(config, indent=2))
        for item in src.iterdir():
            if item.is_file() and item.name not in (INDEX, "config.json") and item.name not in plan.shards:
                shutil.copy2(item, work / item.name)  # tokenizer, processor, chat template, generation config
        work.rename(dst)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return plan
