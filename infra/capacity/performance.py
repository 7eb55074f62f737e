"""The performance model of one vLLM replica (docs/capacity.md): decode is bound by memory bandwidth (the
weights and the KV cache read once per step), prefill by compute, and every layer's two all-reduces by the
GPUs' link; each peak rate derated by the efficiency measured or fitted in infra/catalog/performance.yaml.

Pure and fast: a few dozen floating-point operations per call, no Pulumi, no torch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

from infra.catalog import GpuSpec
from infra.catalog.files import load
from infra.preflight.memory import (
    FP16_BYTES,
    MAX_IMAGE_TOKENS,
    kv_bytes_per_token,
    quantized_bytes_per_param,
    text_linear_params,
    vision_params,
)
from infra.preflight.model import ModelDims

# NVLink machines carry an interconnect far above PCIe's 16-32 GB/s; the all-reduce latency differs with it.
NVLINK_GBS = 100
# Qwen2-VL merges 2 x 2 vision patches into one language-model token.
PATCHES_PER_IMAGE_TOKEN = 4
# vLLM's prefill is scheduled ahead of decode steps (0.6.x default scheduler without chunked prefill), so a
# request waits for the prefills ahead of it: a queue whose p95 wait is ln(rho / 0.05) / (mu - lambda).
P95_TAIL = 0.05


@dataclass(frozen=True)
class Calibration:
    memory_bandwidth: float
    fp16_compute: float
    int4_tflops_cap: float
    interconnect: float
    step_ms: float
    allreduce_us_pcie: float
    allreduce_us_nvlink: float
    error_band: float


@lru_cache(maxsize=1)
def calibration() -> Calibration:
    data = load("performance")
    return Calibration(**data["efficiency"], **data["overhead"], error_band=float(data["error_band"]))


def decode_weight_bytes(dims: ModelDims, tp: int) -> float:
    """Weights one rank reads per decode step: the decoder's linear layers and the LM head (vocab-parallel).
    Not the input embedding (a lookup of B rows) nor the vision tower (it runs in the prefill only)."""
    return (text_linear_params(dims) * quantized_bytes_per_param(dims) + dims.vocab * dims.hidden * FP16_BYTES) / tp


@dataclass(frozen=True)
class Load:
    """What one request asks of the model, on average."""

    prompt_tokens: int
    output_tokens: int
    images: float = 0.0

    @property
    def image_tokens(self) -> float:
        return self.images * MAX_IMAGE_TOKENS

    @property
    def context_tokens(self) -> float:
        """Tokens a request holds in the KV cache on average over its decode."""
        return self.prompt_tokens + self.image_tokens + self.output_tokens / 2


@dataclass(frozen=True)
class Replica:
    """One replica of `dims` on `tp` GPUs of `gpu`."""

    dims: ModelDims
    gpu: GpuSpec
    tp: int

    @property
    def _cal(self) -> Calibration:
        return calibration()

    @cached_property
    def _terms(self) -> tuple[float, float, float, float, float, float]:
        """(weights s, KV s per sequence-token, compute s per sequence, all-reduce s fixed, all-reduce s per
        token, step s): a decode step is linear in these, so operate() can iterate cheaply."""
        bandwidth = self.gpu.memory_bandwidth_gbs * 1e9 * self._cal.memory_bandwidth
        if self.tp == 1:
            ar_fixed = ar_token = 0.0
        else:
            nvlink = self.gpu.interconnect_gbs >= NVLINK_GBS
            latency = (self._cal.allreduce_us_nvlink if nvlink else self._cal.allreduce_us_pcie) * 1e-6
            link = self.gpu.interconnect_gbs * 1e9 * self._cal.interconnect
            # Two all-reduces per decoder layer; a ring moves 2 (tp-1)/tp of the bytes; latency per doubling.
            ar_fixed = 2 * self.dims.layers * latency * math.log2(self.tp)
            ar_token = 2 * self.dims.layers * 2 * (self.tp - 1) / self.tp * self.dims.hidden * FP16_BYTES / link
        return (decode_weight_bytes(self.dims, self.tp) / bandwidth,
                kv_bytes_per_token(self.dims, self.tp) / bandwidth,
                2 * text_linear_params(self.dims) / self.tp / self._linear_flops_per_s,
                ar_fixed, ar_token, self._cal.step_ms / 1000)

    def _allreduce_s(self, tokens: float) -> float:
        _, _, _, ar_fixed, ar_token, _ = self._terms
        return ar_fixed + ar_token * tokens

    def decode_step_s(self, batch: float, context_tokens: float) -> float:
        """One decode step of `batch` sequences holding `context_tokens` each: weights and KV read from memory,
        or the matmuls' compute, whichever is longer; then the all-reduces and the step's fixed cost."""
        weights, kv, compute, ar_fixed, ar_token, step = self._terms
        return max(weights + batch * context_tokens * kv, batch * compute) + ar_fixed + ar_token * batch + step

    @property
    def _fp16_flops_per_s(self) -> float:
        return self.gpu.fp16_tflops * 1e12 * self._cal.fp16_compute

    @property
    def _linear_flops_per_s(self) -> float:
        """The linear layers' rate: fp16 GEMM, or Marlin's for 4-bit weights (capped, see performance.yaml)."""
        quantized = self.dims.quantization.method != "none" and self.dims.quantization.bits <= 4
        return min(self._fp16_flops_per_s, self._cal.int4_tflops_cap * 1e12) if quantized else self._fp16_flops_per_s

    def prefill_s(self, load: Load) -> float:
        """One request's prefill: its prompt and image tokens through the text model (attention included), and
        its images' patches through the vision tower."""
        tokens = load.prompt_tokens + load.image_tokens
        d = self.dims
        linear = 2 * text_linear_params(d) * tokens
        attention = 2 * d.layers * d.heads * d.head_dim * tokens * tokens  # QK^T and PV, causal half of 4x
        vision = 2 * vision_params(d) * load.image_tokens * PATCHES_PER_IMAGE_TOKEN
        return ((linear / self._linear_flops_per_s + (attention + vision) / self._fp16_flops_per_s) / self.tp
                + self._allreduce_s(tokens) + self._cal.step_ms / 1000)

    def single_stream_tokens_per_s(self, load: Load) -> float:
        return 1.0 / self.decode_step_s(1, load.context_tokens)


@dataclass(frozen=True)
class Operating:
    """A replica at an arrival rate: how many sequences it decodes at once and what a request sees."""

    feasible: bool
    batch: float
    step_s: float
    ttft_p95_s: float
    utilization: float

    @property
    def tokens_per_s_per_request(self) -> float:
        return 1.0 / self.step_s if self.step_s else 0.0


def operate(replica: Replica, load: Load, arrivals_per_s: float, max_batch: int) -> Operating:
    """The steady state of one replica with continuous batching: prefills first, decode steps of B sequences
    in the rest of the time. Per second the prefills take arrivals x prefill; the decode steps must then emit
    arrivals x output tokens in what is left, so B / step(B) = arrivals x output / (1 - prefill share), which
    is Little's law for B. Infeasible when even max_batch sequences (the KV cache or max_num_seqs) a step
    cannot keep up, or the prefills alone fill the GPU."""
    prefill = replica.prefill_s(load)
    prefill_share = arrivals_per_s * prefill
    context = load.context_tokens
    if arrivals_per_s <= 0:
        return Operating(True, 0.0, replica.decode_step_s(1, context), prefill, 0.0)
    most = max_batch / replica.decode_step_s(max_batch, context)
    if prefill_share >= 1:
        return Operating(False, float(max_batch), replica.decode_step_s(max_batch, context), math.inf, prefill_share)
    needed = arrivals_per_s * load.output_tokens / (1 - prefill_share)
    if needed > most:
        return Operating(False, float(max_batch), replica.decode_step_s(max_batch, context), math.inf,
                         prefill_share + (1 - prefill_share) * needed / most)
    # B / step(B) grows with B: bisect for the batch that emits what is needed (below 1: idle between steps).
    low, high = 0.0, float(max_batch)
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if middle / replica.decode_step_s(middle, context) < needed else (low, middle)
    batch = high
    step = replica.decode_step_s(max(batch, 1.0), context)
    rate = 1 / prefill
    wait = math.log(prefill_share / P95_TAIL) / (rate - arrivals_per_s) if prefill_share > P95_TAIL else 0.0
    return Operating(True, batch, step, prefill + wait + step, prefill_share + (1 - prefill_share) * needed / most)
