"""vLLM's quantized linear kernels and their per-partition shape rules.

Rules and messages are vLLM's own (layers/quantization/utils/marlin_utils.py, awq.py, gptq.py and
distributed/utils.py in the pinned release, infra.pins.VLLM_VERSION); how a failing layer is handled depends on the vLLM version:
  < 0.7.3            the Marlin shape check raises and the model does not load;
  0.7.3 .. < 0.24.0  an AWQ layer Marlin cannot take falls back to the plain AWQ kernel;
  >= 0.24.0          Marlin zero-pads a shape that misses its thread tile; only a quantization group
                     that straddles the TP shard stays unsupported, and AWQ falls back as above.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.version import Version

from infra.preflight.model import Quantization

MARLIN_MIN_THREAD_N = 64
MARLIN_MIN_THREAD_K = 128
MARLIN_GROUP_SIZES = (-1, 32, 64, 128)
MARLIN_BITS = (4, 8)
FALLBACK_SINCE = Version("0.7.3")
TILE_PADDING_SINCE = Version("0.24.0")
_MARLIN_HINT = "Consider reducing tensor_parallel_size or running with --quantization gptq."


@dataclass(frozen=True)
class Kernel:
    name: str
    checkpoint: str  # the quant_method of the checkpoints it runs
    min_capability: int  # vLLM's integer form, 80 = 8.0
    dtypes: tuple[str, ...]
    marlin: bool


KERNELS = {
    "awq_marlin": Kernel("awq_marlin", "awq", 80, ("float16", "bfloat16"), True),
    "awq": Kernel("awq", "awq", 75, ("float16",), False),
    "gptq_marlin": Kernel("gptq_marlin", "gptq", 80, ("float16", "bfloat16"), True),
    "gptq": Kernel("gptq", "gptq", 60, ("float16",), False),
    "none": Kernel("none", "none", 70, ("float16", "bfloat16"), False),
}
QUANTIZATION_CHOICES = ("auto", *KERNELS)


def marlin_compatible(quant: Quantization, capability: int) -> bool:
    """vLLM's is_awq_marlin_compatible / is_gptq_marlin_compatible for this checkpoint on this GPU."""
    if capability < 80 or quant.bits not in MARLIN_BITS or quant.group_size not in MARLIN_GROUP_SIZES:
        return False
    # AWQ Marlin needs the runtime zero point; GPTQ Marlin the symmetric (no zero point) variant.
    return quant.zero_point if quant.method == "awq" else not quant.zero_point


def resolve_kernel(requested: str, quant: Quantization, capability: int) -> str:
    """The kernel vLLM runs for `--quantization requested` ("auto" = no flag)."""
    if requested != "auto":
        return requested
    if quant.method == "none":
        return "none"
    marlin = f"{quant.method}_marlin"
    return marlin if marlin_compatible(quant, capability) else quant.method


@dataclass(frozen=True)
class LinearPartition:
    """One linear layer as a tensor-parallel rank sees it: K inputs, N outputs."""

    name: str
    parallel: str  # "column" splits the output N across ranks, "row" splits the input K
    k_full: int
    n_full: int
    k: int
    n: int
    tp: int
    quantized: bool
    # Full sizes vLLM divides by tp for this layer (a merged layer divides each of its parts).
    splits: tuple[int, ...]


def column_parallel(
    name: str, k: int, parts: tuple[int, ...], tp: int, quantized: bool, n: int | None = None
) -> LinearPartition:
    n_full = sum(parts)
    n_rank = sum(part // tp for part in parts) if n is None else n
    splits = parts if n is None else ()
    return LinearPartition(name, "column", k, n_full, k, n_rank, tp, quantized, splits)


def row_parallel(name: str, k_full: int, n: int, tp: int, quantized: bool) -> LinearPartition:
    return LinearPartition(name, "row", k_full, n, k_full // tp, n, tp, quantized, (k_full,))


@dataclass(frozen=True)
class LayerOutcome:
    ok: bool
    kernel: str  # the kernel that ends up running the layer
    messages: tuple[str, ...]  # vLLM's errors, or notes about a fallback


def marlin_tile_problems(layer: LinearPartition) -> list[str]:
    problems = []
    if layer.n % MARLIN_MIN_THREAD_N:
        problems.append(
            f"Weight output_size_per_partition = {layer.n} is not divisible by "
            f" min_thread_n = {MARLIN_MIN_THREAD_N}. {_MARLIN_HINT}"
        )
    if layer.k % MARLIN_MIN_THREAD_K:
        problems.append(
            f"Weight input_size_per_partition = {layer.k} is not divisible "
            f"by min_thread_k = {MARLIN_MIN_THREAD_K}. {_MARLIN_HINT}"
        )
    return problems


def group_straddle_problems(layer: LinearPartition, group_size: int) -> list[str]:
    if group_size != -1 and group_size < layer.k_full and layer.k % group_size:
        return [
            f"Weight input_size_per_partition = {layer.k} is not divisible by group_size = "
            f"{group_size}.{_MARLIN_HINT}"
        ]
    return []


def plain_kernel_problems(layer: LinearPartition, quant: Quantization) -> list[str]:
    """awq.py / gptq.py create_weights: the group must not straddle the shard, N must pack."""
    problems = []
    if quant.group_size != -1 and layer.k % quant.group_size:
        problems.append(
            "The input size is not aligned with the quantized weight shape. "
            "This can be caused by too large tensor parallel size."
        )
    if layer.n % (32 // quant.bits):
        problems.append(
            "The output size is not aligned with the quantized weight shape. "
            "This can be caused by too large tensor parallel size."
        )
    return problems


def evaluate_layer(
    layer: LinearPartition, kernel: str, quant: Quantization, vllm_version: Version
) -> LayerOutcome:
    indivisible = [size for size in layer.splits if size % layer.tp]
    if indivisible:
        return LayerOutcome(False, kernel, (f"{indivisible[0]} is not divisible by {layer.tp}",))
    if not layer.quantized or kernel == "none":
        return LayerOutcome(True, "unquantized", ())
    if not KERNELS[kernel].marlin:
        problems = plain_kernel_problems(layer, quant)
        return LayerOutcome(not problems, kernel, tuple(problems))

    tile = marlin_tile_problems(layer)
    group = group_straddle_problems(layer, quant.group_size)
    if vllm_version >= TILE_PADDING_SINCE:
        blocking = group
        padded_note = ("Marlin zero-pads this shape at load time",) if tile else ()
    else:
        blocking = tile + group
        padded_note = ()
    if not blocking:
        return LayerOutcome(True, kernel, padded_note)
    if kernel == "awq_marlin" and vllm_version >= FALLBACK_SINCE:
        fallback = plain_kernel_problems(layer, quant)
        note = f"Marlin cannot take this layer ({blocking[0]}); vLLM {vllm_version} falls back to the plain AWQ kernel"
        return LayerOutcome(not fallback, "awq", (note, *fallback))
    return LayerOutcome(False, kernel, tuple(blocking))
