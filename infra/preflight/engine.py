"""The preflight: will vLLM load and serve this model, with this kernel, at this TP, on this GPU?

Every check is a named rule with vLLM's own message where vLLM has one, and a fix that is computed
from the same rules (never a canned string): the padded intermediate size, the TP values that load,
the plain kernel, a GPU shape from the catalog, a max_model_len that fits. A fix that is a change of the
request (Fix.changes) is offered only when the changed request passes the preflight itself; callers write
it in their own words (scripts/preflight.py as flags, the stack as `pulumi config set`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping

from packaging.version import InvalidVersion, Version

from infra import pins
from infra import catalog
from infra.preflight.kernels import KERNELS, QUANTIZATION_CHOICES, evaluate_layer, resolve_kernel
from infra.preflight.layers import text_layers, vision_layers
from infra.preflight.memory import MAX_IMAGE_TOKENS, MemoryEstimate, estimate_memory, largest_fitting_model_len
from infra.preflight.model import ModelDims, parse_model_config

FIRST_QWEN2_VL_RELEASE = Version("0.6.1")
VISION_QUANTIZED_SINCE = Version("0.6.4")
COMMON_TP_SIZES = (1, 2, 4, 8)
TUNED_UTILIZATION = 0.95


class PreflightInputError(ValueError):
    """The request itself is invalid (unknown GPU, bad version, bad numbers)."""


@dataclass(frozen=True)
class PreflightRequest:
    model_config: Mapping[str, Any]
    tensor_parallel_size: int
    gpu: str
    quantization: str = "auto"
    vllm_version: str = pins.VLLM_VERSION
    max_model_len: int | None = None  # None: the model's max_position_embeddings, as vLLM does
    max_num_seqs: int = 256  # vLLM's default
    gpu_memory_utilization: float = 0.90
    dtype: str = "auto"
    model_repo: str | None = None  # for revision facts from the catalog
    revision: str | None = None


# The request's fields as the command line spells them (scripts/preflight.py), for the fixes' text.
FLAGS = {
    "tensor_parallel_size": "--tensor-parallel-size",
    "max_model_len": "--max-model-len",
    "max_num_seqs": "--max-num-seqs",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "quantization": "--quantization",
    "dtype": "--dtype",
    "gpu": "--gpu",
}


@dataclass(frozen=True)
class Fix:
    """One way out: its words, and the request changes it stands for (each alternative alone makes the request
    pass); no changes = advice outside the request (pad the checkpoint, pin another revision)."""

    text: str
    changes: tuple[Mapping[str, Any], ...] = ()


def _flag_text(changes: Mapping[str, Any]) -> str:
    return " ".join(f"{FLAGS[k]} {v}" for k, v in changes.items())


def _fix_text(fixes: Iterable[Fix]) -> str:
    return "; or ".join(f.text for f in fixes)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    message: str
    fix: str = ""
    # A failed "warning" does not stop vLLM from serving (it queues requests instead).
    severity: str = "error"
    fixes: tuple[Fix, ...] = ()

    def as_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "message": self.message, "fix": self.fix, "severity": self.severity,
                "changes": [dict(c) for f in self.fixes for c in f.changes]}


@dataclass(frozen=True)
class Verdict:
    request: PreflightRequest
    kernel: str
    checks: tuple[Check, ...]
    memory: MemoryEstimate | None
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ok", all(c.ok or c.severity == "warning" for c in self.checks))

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok and c.severity == "error")

    @property
    def warnings(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok and c.severity == "warning")

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "kernel": self.kernel,
            "gpu": self.request.gpu,
            "tensor_parallel_size": self.request.tensor_parallel_size,
            "vllm_version": self.request.vllm_version,
            "checks": [c.as_dict() for c in self.checks],
            "memory": self.memory.as_dict() if self.memory else {},
        }

    def summary(self) -> str:
        """One paragraph for error messages: every failed check with its fix."""
        head = (
            f"vLLM {self.request.vllm_version} would not serve this model at TP={self.request.tensor_parallel_size} "
            f"on {self.request.gpu} ({self.kernel} kernel):"
        )
        lines = [head] + [f"  - [{c.name}] {c.message}" + (f"\n    fix: {c.fix}" if c.fix else "") for c in self.failures]
        return "\n".join(lines)


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion as exc:
        raise PreflightInputError(f"vLLM version {text!r} is not a version number (for example {pins.VLLM_VERSION})") from exc


def _validate(request: PreflightRequest) -> None:
    if request.quantization not in QUANTIZATION_CHOICES:
        raise PreflightInputError(
            f"quantization {request.quantization!r} is not one of {', '.join(QUANTIZATION_CHOICES)}"
        )
    if request.tensor_parallel_size < 1:
        raise PreflightInputError(f"tensor-parallel size must be at least 1, got {request.tensor_parallel_size}")
    if not 0 < request.gpu_memory_utilization <= 1:
        raise PreflightInputError(
            f"gpu_memory_utilization must be in (0, 1], got {request.gpu_memory_utilization}"
        )
    if request.max_model_len is not None and request.max_model_len < 1:
        raise PreflightInputError(f"max_model_len must be positive, got {request.max_model_len}")
    if request.max_num_seqs < 1:
        raise PreflightInputError(f"max_num_seqs must be positive, got {request.max_num_seqs}")
    if request.dtype not in ("auto", "float16", "bfloat16"):
        raise PreflightInputError(f"dtype {request.dtype!r} is not one of auto, float16, bfloat16")


def _resolved_dtype(request: PreflightRequest, dims: ModelDims) -> str:
    if request.dtype != "auto":
        return request.dtype
    # vLLM keeps float16/bfloat16 checkpoints as they are and runs float32 ones in float16.
    return dims.torch_dtype if dims.torch_dtype in ("float16", "bfloat16") else "float16"


class _Evaluation:
    """One evaluation of a request; `suggest` computes fixes by evaluating variants of it."""

    def __init__(self, request: PreflightRequest, dims: ModelDims, suggest: bool) -> None:
        self.request = request
        self.dims = dims
        self.suggest = suggest
        self.tp = request.tensor_parallel_size
        self.gpu = catalog.gpu(request.gpu)
        self.version = _version(request.vllm_version)
        self.kernel = resolve_kernel(request.quantization, dims.quantization, self.gpu.capability_int)
        self.max_model_len = request.max_model_len or dims.max_position_embeddings

    # -- the rules ---------------------------------------------------------------------------------
    def checks(self) -> list[Check]:
        checks = [self.model_support(), *self.revision(), self.quantization(), self.capability(), self.dtype()]
        checks += self.parallelism()
        checks += self.layer_shapes()
        checks += self.context_length()
        checks += self.memory_checks()
        return checks

    def model_support(self) -> Check:
        ok = self.dims.vision is None or self.version >= FIRST_QWEN2_VL_RELEASE
        return Check(
            "model_support",
            ok,
            "vLLM supports the model architecture" if ok
            else "Model architectures ['Qwen2VLForConditionalGeneration'] are not supported for now.",
            "" if ok else f"use vLLM >= {FIRST_QWEN2_VL_RELEASE} (Qwen2-VL support starts there)",
        )

    def revision(self) -> list[Check]:
        if not self.request.model_repo or not self.request.revision:
            return []
        try:
            model = catalog.catalog_model(self.request.model_repo)
        except catalog.CatalogError:
            return []
        facts = model.revision_facts(self.request.revision)
        if facts is None or facts.bad_reason is None:
            note = f" ({facts.note})" if facts and facts.note else ""
            return [Check("revision", True, f"revision {self.request.revision} is not known to be broken{note}")]
        return [
            Check(
                "revision",
                False,
                f"revision {facts.revision} of {model.repo} is known to be broken: {facts.bad_reason}",
                f"pin a later revision of {model.repo} and record it with scripts/lock_model.py",
            )
        ]

    def quantization(self) -> Check:
        checkpoint = self.dims.quantization.method
        wanted = KERNELS[self.kernel].checkpoint
        if wanted == checkpoint:
            return Check("quantization", True, f"{checkpoint} checkpoint runs on the {self.kernel} kernel")
        return Check(
            "quantization",
            False,
            f"Quantization method specified in the model config ({checkpoint}) does not match the quantization "
            f"method specified in the `quantization` argument ({self.kernel}).",
            *self._fixed([self._change("leave quantization on auto", quantization="auto"),
                          Fix(f"choose a kernel for {checkpoint} checkpoints: "
                              f"{', '.join(k for k, v in KERNELS.items() if v.checkpoint == checkpoint)}")]),
        )

    def capability(self) -> Check:
        need = KERNELS[self.kernel].min_capability
        have = self.gpu.capability_int
        if have >= need:
            return Check("gpu_capability", True, f"{self.gpu.name} (capability {have}) runs {self.kernel} (needs {need})")
        return Check(
            "gpu_capability",
            False,
            f"The quantization method {self.kernel} is not supported for the current GPU. "
            f"Minimum capability: {need}. Current capability: {have}.",
            *self._fixed(self._fix_capability(need)),
        )

    def dtype(self) -> Check:
        dtype = _resolved_dtype(self.request, self.dims)
        if dtype == "bfloat16" and not self.gpu.supports_bfloat16:
            return Check(
                "dtype",
                False,
                "Bfloat16 is only supported on GPUs with compute capability of at least 8.0. "
                f"Your {self.gpu.name} GPU has compute capability {self.gpu.capability_int}.",
                *self._fixed([self._change("run in float16", dtype="float16")]),
            )
        allowed = KERNELS[self.kernel].dtypes
        if dtype not in allowed:
            return Check(
                "dtype",
                False,
                f"torch.{dtype} is not supported for quantization method {self.kernel}. "
                f"Supported dtypes: [{', '.join('torch.' + d for d in allowed)}]",
                *self._fixed([self._change("run in float16", dtype="float16")]),
            )
        return Check("dtype", True, f"{dtype} activations on {self.kernel}")

    def parallelism(self) -> list[Check]:
        d, tp = self.dims, self.tp
        fixes = self._fix_tp() if self.suggest else []
        fix, fixed = _fix_text(fixes), tuple(fixes)
        checks = [
            Check(
                "attention_heads",
                d.heads % tp == 0,
                f"{d.heads} attention heads divide by TP {tp}" if d.heads % tp == 0
                else f"Total number of attention heads ({d.heads}) must be divisible by tensor parallel size ({tp}).",
                "" if d.heads % tp == 0 else fix,
                fixes=() if d.heads % tp == 0 else fixed,
            ),
        ]
        kv_ok = d.kv_heads % tp == 0 or tp % d.kv_heads == 0
        checks.append(
            Check(
                "kv_heads",
                kv_ok,
                f"{d.kv_heads} KV heads " + ("split or replicate evenly" if kv_ok else f"and TP {tp}: neither divides the other"),
                "" if kv_ok else fix,
                fixes=() if kv_ok else fixed,
            )
        )
        if d.vision is not None:
            v_ok = d.vision.num_heads % tp == 0
            checks.append(
                Check(
                    "vision_heads",
                    v_ok,
                    f"{d.vision.num_heads} vision attention heads "
                    + ("divide by" if v_ok else "is not divisible by") + f" TP {tp}",
                    "" if v_ok else fix,
                    fixes=() if v_ok else fixed,
                )
            )
        return checks

    def _vision_quantized(self) -> bool:
        q = self.dims.quantization
        return (
            self.dims.vision is not None
            and q.method == "awq"
            and self.version >= VISION_QUANTIZED_SINCE
            and "visual" not in q.unquantized_modules
        )

    def layer_outcomes(self) -> list[tuple[str, Any]]:
        layers = [("text", layer) for layer in text_layers(self.dims, self.tp)]
        layers += [("vision", layer) for layer in vision_layers(self.dims, self.tp, self._vision_quantized())]
        return [
            (f"shape.{part}.{layer.name}", layer, evaluate_layer(layer, self.kernel, self.dims.quantization, self.version))
            for part, layer in layers
        ]

    def layer_shapes(self) -> list[Check]:
        checks = []
        outcomes = self.layer_outcomes()
        any_failed = any(not outcome.ok for _, _, outcome in outcomes)
        fixes = tuple(self._fix_shapes()) if self.suggest and any_failed else ()
        fix = _fix_text(fixes)
        for name, layer, outcome in outcomes:
            where = f"K={layer.k} N={layer.n} per rank at TP {self.tp}"
            if outcome.ok:
                notes = "; ".join(outcome.messages)
                checks.append(Check(name, True, f"{where} on {outcome.kernel}" + (f" ({notes})" if notes else "")))
            else:
                # vLLM stops at the first problem it meets; the rest are noted after it.
                first, *more = outcome.messages
                also = f" (also: {'; '.join(more)})" if more else ""
                checks.append(Check(name, False, f"{first} [{where}]{also}", fix, fixes=fixes))
        if self._vision_quantized():
            checks.append(
                Check(
                    "vision_tower_quantization",
                    False,
                    f"vLLM >= {VISION_QUANTIZED_SINCE} quantizes the vision tower of AWQ checkpoints whose "
                    "modules_to_not_convert does not name it, and this checkpoint's vision weights are float16",
                    'add "visual" to quantization_config.modules_to_not_convert in config.json, '
                    f"or use vLLM < {VISION_QUANTIZED_SINCE}",
                )
            )
        return checks

    def context_length(self) -> list[Check]:
        limit = self.dims.max_position_embeddings
        length = self.max_model_len
        checks = [
            Check(
                "max_model_len",
                length <= limit,
                f"max_model_len {length} within max_position_embeddings {limit}" if length <= limit
                else f"User-specified max_model_len ({length}) is greater than the derived max_model_len "
                f"(max_position_embeddings={limit} in model's config.json).",
                *(("", "error") if length <= limit else self._fixed(
                    [self._change(f"{FLAGS['max_model_len']} {limit} or less", max_model_len=limit)])),
            )
        ]
        if self.dims.vision is not None:
            need = MAX_IMAGE_TOKENS + 2
            checks.append(
                Check(
                    "image_tokens",
                    length >= need,
                    f"one image of up to {MAX_IMAGE_TOKENS} tokens fits in max_model_len {length}" if length >= need
                    else "Qwen2-VL cannot process 1 images in a prompt, please increase max_model_len or reduce "
                    "image limit by --limit-mm-per-prompt.",
                    *(("", "error") if length >= need else self._fixed(
                        [self._change(f"{FLAGS['max_model_len']} {need} or more", max_model_len=need)])),
                )
            )
        return checks

    def memory(self) -> MemoryEstimate:
        r = self.request
        return estimate_memory(self.dims, self.gpu, self.tp, r.gpu_memory_utilization, self.max_model_len, r.max_num_seqs)

    def memory_checks(self) -> list[Check]:
        est = self.memory()
        r = self.request
        checks = []
        weights_ok = est.weights_gib < est.gpu_memory_gib
        checks.append(
            Check(
                "memory.weights",
                weights_ok,
                f"weights {est.weights_gib:.1f} GiB per GPU of {est.gpu_memory_gib:.1f} GiB" if weights_ok
                else f"CUDA out of memory while loading weights: {est.weights_gib:.1f} GiB per GPU, "
                f"the GPU has {est.gpu_memory_gib:.1f} GiB",
                *(("", "error") if weights_ok else self._fixed(self._fix_memory())),
            )
        )
        if not weights_ok:
            return checks
        if est.kv_tokens <= 0:
            checks.append(
                Check(
                    "memory.kv_cache",
                    False,
                    "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
                    f"initializing the engine. (budget {est.budget_gib:.1f} GiB - weights {est.weights_gib:.1f} GiB "
                    f"- activations {est.activation_reserve_gib:.1f} GiB)",
                    *self._fixed(self._fix_memory()),
                )
            )
            return checks
        fits = est.kv_tokens >= self.max_model_len
        checks.append(
            Check(
                "memory.max_model_len",
                fits,
                f"KV cache {est.kv_cache_gib:.1f} GiB holds {est.kv_tokens} tokens; one {self.max_model_len}-token "
                "sequence fits" if fits
                else f"The model's max seq len ({self.max_model_len}) is larger than the maximum number of tokens "
                f"that can be stored in KV cache ({est.kv_tokens}). Try increasing `gpu_memory_utilization` or "
                "decreasing `max_model_len` when initializing the engine.",
                *(("", "error") if fits else self._fixed(self._fix_memory())),
            )
        )
        if fits:
            enough = est.concurrent_full_sequences >= r.max_num_seqs
            fixes = (self._fix_memory(target_seqs=r.max_num_seqs) if not enough and self.suggest else [])
            fix = (f"expect queueing above {est.concurrent_full_sequences} full-length requests; " + _fix_text(fixes)
                   if fixes else "")
            checks.append(
                Check(
                    "memory.concurrency",
                    enough,
                    f"{est.concurrent_full_sequences} concurrent {self.max_model_len}-token sequences fit "
                    f"(max_num_seqs {r.max_num_seqs})",
                    fix,
                    severity="warning",
                    fixes=tuple(fixes),
                )
            )
        return checks

    # -- fixes: every one found by re-running the rules on a changed request ------------------------
    def _variant(self, dims: ModelDims | None = None, **changes: Any) -> "_Evaluation":
        return _Evaluation(replace(self.request, **changes), dims or self.dims, suggest=False)

    def _serves(self, dims: ModelDims | None = None, **changes: Any) -> bool:
        return all(c.ok or c.severity == "warning" for c in self._variant(dims, **changes).checks())

    def _loads(self, evaluation: "_Evaluation") -> bool:
        """Shapes and heads only: would the weights load (memory aside)?"""
        parallel = all(c.ok for c in evaluation.parallelism())
        return parallel and all(outcome.ok for _, _, outcome in evaluation.layer_outcomes())

    def _fixed(self, fixes: list[Fix]) -> tuple[str, str, tuple[Fix, ...]]:
        """(fix text, severity, fixes): a failed error check's trailing fields."""
        fixes = [f for f in fixes if f.text] if self.suggest else []
        return _fix_text(fixes), "error", tuple(fixes)

    def _change(self, why: str, **changes: Any) -> Fix:
        """A change of the request, offered only when the changed request serves (an empty Fix otherwise,
        which _fixed drops): a fix that fails the preflight itself would send the user round in circles."""
        if not self.suggest or not self._serves(**changes):
            return Fix("")
        flags = _flag_text(changes)
        return Fix(why if flags in why else f"{why}: {flags}", (dict(changes),))

    def serving_tp_sizes(self, target_seqs: int = 1) -> list[int]:
        """The other TP sizes at which the request serves (and, for target_seqs > 1, holds that many
        full-length sequences)."""
        sizes = []
        for tp in COMMON_TP_SIZES:
            if tp == self.tp or not self._serves(tensor_parallel_size=tp):
                continue
            if target_seqs > 1 and self._variant(tensor_parallel_size=tp).memory().concurrent_full_sequences < target_seqs:
                continue
            sizes.append(tp)
        return sizes

    def _tp_fix(self, sizes: list[int], why: str) -> list[Fix]:
        if not sizes:
            return []
        return [Fix(f"use {FLAGS['tensor_parallel_size']} {' or '.join(map(str, sizes))} ({why})",
                    tuple({"tensor_parallel_size": tp} for tp in sizes))]

    def _fix_tp(self) -> list[Fix]:
        fixes = self._tp_fix(self.serving_tp_sizes(), f"the TP sizes at which it loads and fits on {self.gpu.name}")
        return fixes or [Fix(f"no TP size in 1/2/4/8 serves this model on {self.gpu.name} with this kernel")]

    def smallest_padded_intermediate(self, tp_sizes: Iterable[int]) -> int | None:
        """The smallest intermediate_size >= today's whose MLP layers load at every TP in `tp_sizes`."""
        sizes = list(tp_sizes)
        group = max(self.dims.quantization.group_size, 1)
        # Every candidate must split evenly at each TP size, so only multiples of their lcm can work;
        # a multiple of tp x lcm(128, 64, group) at every tp meets every kernel's rule, so the search ends.
        step = math.lcm(*sizes)
        bound = math.lcm(*(tp * math.lcm(128, 64, group) for tp in sizes))
        start = -(-self.dims.intermediate // step) * step
        for candidate in range(start, -(-self.dims.intermediate // bound) * bound + 1, step):
            dims = self.dims.with_intermediate(candidate)
            if all(
                evaluate_layer(layer, self.kernel, dims.quantization, self.version).ok
                for tp in sizes
                for layer in text_layers(dims, tp)
                if layer.name.startswith("mlp.")
            ):
                return candidate
        return None

    def _fix_shapes(self) -> list[Fix]:
        fixes = []
        failing = {name for name, _, outcome in self.layer_outcomes() if not outcome.ok}
        if failing and all(name.startswith("shape.text.mlp.") for name in failing):
            here = self.smallest_padded_intermediate([self.tp])
            everywhere = self.smallest_padded_intermediate(COMMON_TP_SIZES)
            if here:
                fixes.append(Fix(
                    f"use a checkpoint with intermediate_size padded to {here} (smallest that loads at TP {self.tp}; "
                    f"{everywhere} loads at TP 1/2/4/8)"))
                if self.dims.quantization.method == "awq":
                    fixes.append(Fix(f"pad the checkpoint you have, losslessly and in minutes: "
                                     f"python scripts/pad_checkpoint.py SRC DST --tp {self.tp}"))
        if KERNELS[self.kernel].marlin:
            fixes.append(self._change("force the plain kernel (slower, but it loads)",
                                      quantization=KERNELS[self.kernel].checkpoint))
        fixes += self._tp_fix(self.serving_tp_sizes(), f"the TP sizes at which it loads and fits on {self.gpu.name}")
        fixes = [f for f in fixes if f.text]
        return fixes or [Fix("no TP size, padding or kernel change found that loads")]

    def cheapest_gpu(self, accept: Callable[["_Evaluation"], bool]) -> tuple[str, Any] | None:
        """Another GPU, of the cheapest priced catalog shape that holds whole replicas at this TP (GPUs a multiple
        of it), on which the request serves and `accept` holds; with that shape."""
        options = sorted(
            ((shape.usd_per_hour, spec.name, shape) for spec in catalog.gpu_catalog().values()
             if spec.name != self.gpu.name
             for shape in spec.shapes if shape.gpus % self.tp == 0 and shape.usd_per_hour is not None),
            key=lambda option: (option[0], option[1]))
        tried = set()
        for _, name, shape in options:
            if name in tried:
                continue
            tried.add(name)
            if self._serves(gpu=name) and accept(self._variant(gpu=name)):
                return name, shape
        return None

    def _gpu_fix(self, why: str, accept: Callable[["_Evaluation"], bool]) -> list[Fix]:
        found = self.cheapest_gpu(accept)
        if not found:
            return []
        name, shape = found
        return [Fix(f"{why}: {FLAGS['gpu']} {name} (cheapest shape {shape.cloud} {shape.instance}, "
                    f"{shape.gpus} GPUs, about ${shape.usd_per_hour:.2f}/h)", ({"gpu": name},))]

    def _fix_capability(self, need: int) -> list[Fix]:
        fixes = []
        if KERNELS[self.kernel].marlin:
            fixes.append(self._change("use the plain kernel", quantization=KERNELS[self.kernel].checkpoint))
        fixes += self._gpu_fix(f"a GPU of compute capability {need / 10:.1f} or more",
                               lambda e: e.gpu.capability_int >= need)
        fixes = [f for f in fixes if f.text]
        return fixes or [Fix(f"use a GPU with compute capability >= {need / 10:.1f}")]

    def _fix_memory(self, target_seqs: int = 1) -> list[Fix]:
        if not self.suggest:
            return []
        fixes = []
        r = self.request
        if target_seqs == 1:
            length = largest_fitting_model_len(
                self.dims, self.gpu, self.tp, r.gpu_memory_utilization, r.max_num_seqs, self.max_model_len
            )
            if length >= MAX_IMAGE_TOKENS + 2:
                fixes.append(self._change(f"{FLAGS['max_model_len']} {length}", max_model_len=length))
        if r.gpu_memory_utilization < TUNED_UTILIZATION:
            tuned = self._variant(gpu_memory_utilization=TUNED_UTILIZATION).memory()
            if tuned.kv_tokens >= self.max_model_len * target_seqs:
                fixes.append(self._change(f"{FLAGS['gpu_memory_utilization']} {TUNED_UTILIZATION}",
                                          gpu_memory_utilization=TUNED_UTILIZATION))
        if target_seqs > 1:
            seqs = max(1, self.memory().concurrent_full_sequences)
            fixes.append(self._change(f"{FLAGS['max_num_seqs']} {seqs}", max_num_seqs=seqs))
        bigger = [tp for tp in self.serving_tp_sizes(target_seqs) if tp > self.tp]
        fixes += self._tp_fix(bigger, "more GPUs per replica share the weights and the KV cache")
        fixes += self._gpu_fix(
            "a GPU with more memory",
            lambda e: e.gpu.memory_gib > self.gpu.memory_gib
            and (target_seqs == 1 or e.memory().concurrent_full_sequences >= target_seqs))
        fixes = [f for f in fixes if f.text]
        if fixes or target_seqs > 1:
            return fixes
        return [Fix("no setting on this GPU fits; use a GPU with more memory or a higher TP")]


def run_preflight(request: PreflightRequest, suggest: bool = True) -> Verdict:
    """The verdict; `suggest=False` skips computing fixes (the capacity planner asks only pass or fail)."""
    _validate(request)
    try:
        catalog.gpu(request.gpu)
    except catalog.CatalogError as exc:
        raise PreflightInputError(str(exc)) from exc
    dims = parse_model_config(request.model_config)
    evaluation = _Evaluation(request, dims, suggest=suggest)
    checks = evaluation.checks()
    return Verdict(request, evaluation.kernel, tuple(checks), evaluation.memory())


def catalog_request(model: str, revision: str | None = None, **kwargs: Any) -> PreflightRequest:
    """A request for a catalog model (`repo` or `repo@revision`) at a revision."""
    repo, _, rev = model.partition("@")
    revision = revision or rev or None
    try:
        entry = catalog.catalog_model(repo)
    except catalog.CatalogError as exc:
        raise PreflightInputError(str(exc)) from exc
    return PreflightRequest(model_config=entry.config_at(revision), model_repo=entry.repo, revision=revision, **kwargs)


def padded_intermediate_size(request: PreflightRequest, tp_sizes: Iterable[int]) -> int | None:
    """The smallest intermediate_size >= the model's whose MLP layers load at every TP in `tp_sizes`
    with the request's kernel, GPU and vLLM version."""
    _validate(request)
    return _Evaluation(request, parse_model_config(request.model_config), suggest=False).smallest_padded_intermediate(
        tp_sizes)
