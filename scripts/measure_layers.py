"""Time Qwen2-VL-72B's decoder GEMMs and GEMVs at each tensor-parallel slice on one GPU, in float16 with PyTorch,
to calibrate the capacity planner's achievable memory bandwidth (decode: a few tokens, weights dominate) and
FLOP rate (prefill: thousands of tokens) on that GPU. Needs a CUDA GPU and torch; no vLLM.

    python scripts/measure_layers.py --out measured.json

Writes {"device", "torch", "cuda", "measured_on", "memory_gib", "copy_gbs", "layers": [{"layer", "tp", "m", "k",
"n", "us", "tflops", "gbs"}], "decode_steps": [{"tp", "m", "ms", "weight_gb", "gbs"}]}: per layer slice and token
count M, the median time of one matmul (M x K) @ (K x N), its FLOP rate (2MKN / t) and the bytes it must move
((MK + KN + MN) x 2 / t); and per TP slice, one GPU's linear layers of a whole decode step (all 80 layers' four
matmuls, replayed as one CUDA graph, as vLLM replays decode steps) and the weight bandwidth that makes."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import datetime, timezone

HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, HEAD_DIM = 8192, 29696, 64, 8, 128
TOKEN_COUNTS = (1, 8, 16, 32, 64, 128, 256, 1024, 4096)
TP_SIZES = (1, 2, 4, 8)
LAYERS = 80
DECODE_TP_SIZES = (2, 4, 8)  # TP 1's 136 GiB of fp16 weights do not leave room on one GPU
DECODE_TOKENS = (1, 16, 64)


def layer_slices(tp: int) -> dict[str, tuple[int, int]]:
    """(K, N) of each linear layer on one rank: column-parallel layers split N, row-parallel ones split K."""
    kv = max(KV_HEADS // tp, 1)
    return {
        "qkv_proj": (HIDDEN, (HEADS // tp + 2 * kv) * HEAD_DIM),
        "o_proj": (HEADS * HEAD_DIM // tp, HIDDEN),
        "gate_up_proj": (HIDDEN, 2 * INTERMEDIATE // tp),
        "down_proj": (INTERMEDIATE // tp, HIDDEN),
    }


def time_us(torch, fn, repeats: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end) * 1000)
    return statistics.median(samples)


def decode_step(torch, tp: int, m: int, repeats: int) -> dict:
    """One rank's 80 layers of linear layers for m tokens, captured as one CUDA graph."""
    slices = list(layer_slices(tp).values())
    weights = [[torch.randn(k, n, dtype=torch.float16, device="cuda") for k, n in slices] for _ in range(LAYERS)]
    inputs = [torch.randn(m, k, dtype=torch.float16, device="cuda") for k, _ in slices]

    def step():
        for layer in weights:
            for x, w in zip(inputs, layer):
                torch.matmul(x, w)

    step()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    us = time_us(torch, graph.replay, repeats)
    weight_bytes = LAYERS * sum(k * n for k, n in slices) * 2
    del weights, graph
    torch.cuda.empty_cache()
    return {"tp": tp, "m": m, "ms": round(us / 1000, 3), "weight_gb": round(weight_bytes / 1e9, 2),
            "gbs": round(weight_bytes / us / 1e3, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    # Device-to-device copy of 2 GiB: read + write, the card's practical bandwidth ceiling.
    src = torch.empty(2 * 1024**3 // 2, dtype=torch.float16, device=device)
    dst = torch.empty_like(src)
    copy_us = time_us(torch, lambda: dst.copy_(src), 10)
    rows = []
    for tp in TP_SIZES:
        for layer, (k, n) in layer_slices(tp).items():
            weight = torch.randn(k, n, dtype=torch.float16, device=device)
            for m in TOKEN_COUNTS:
                x = torch.randn(m, k, dtype=torch.float16, device=device)
                us = time_us(torch, lambda: torch.matmul(x, weight), args.repeats)
                moved = (m * k + k * n + m * n) * 2
                rows.append({"layer": layer, "tp": tp, "m": m, "k": k, "n": n, "us": round(us, 2),
                             "tflops": round(2 * m * k * n / us / 1e6, 1), "gbs": round(moved / us / 1e3, 1)})
            del weight
    steps = [decode_step(torch, tp, m, 10) for tp in DECODE_TP_SIZES for m in DECODE_TOKENS]
    result = {
        "device": props.name,
        "memory_gib": round(props.total_memory / 1024**3, 2),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "measured_on": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "copy_gbs": round(2 * src.numel() * 2 / copy_us / 1e3, 1),
        "layers": rows,
        "decode_steps": steps,
    }
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "layers"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
