"""Measures scripts/pad_checkpoint.py on a generated multi-GB AWQ checkpoint (72B-sized MLP layers).

    .venv/bin/python tests/measure_padding.py WORKDIR [LAYERS] [LAYERS_PER_SHARD]

Prints the checkpoint size, the wall time and the peak resident memory of the padding run.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]
HIDDEN, INTERMEDIATE, GROUP = 8192, 29568, 128  # Qwen2-VL-72B's first upload


def generate(path: Path, layers: int, per_shard: int) -> int:
    rng = np.random.default_rng(0)
    path.mkdir(parents=True)
    weight_map, total, shard_count = {}, 0, -(-layers // per_shard)
    for number in range(shard_count):
        tensors = {}
        for layer in range(number * per_shard, min(layers, (number + 1) * per_shard)):
            for proj, (k, n) in {"gate_proj": (HIDDEN, INTERMEDIATE), "up_proj": (HIDDEN, INTERMEDIATE),
                                 "down_proj": (INTERMEDIATE, HIDDEN)}.items():
                prefix = f"model.layers.{layer}.mlp.{proj}"
                tensors[f"{prefix}.qweight"] = rng.integers(-2**31, 2**31 - 1, size=(k, n // 8), dtype=np.int32)
                tensors[f"{prefix}.qzeros"] = rng.integers(-2**31, 2**31 - 1, size=(k // GROUP, n // 8), dtype=np.int32)
                tensors[f"{prefix}.scales"] = rng.random((k // GROUP, n), dtype=np.float32).astype(np.float16)
        name = f"model-{number + 1:05d}-of-{shard_count:05d}.safetensors"
        save_file(tensors, path / name, metadata={"format": "pt"})
        total += sum(t.nbytes for t in tensors.values())
        weight_map.update({t: name for t in tensors})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                   "weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps({
        "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE, "num_hidden_layers": layers,
        "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 152064, "max_position_embeddings": 32768,
        "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": GROUP, "zero_point": True,
                                "version": "gemm"}}))
    return total


def main(workdir: Path, layers: int = 6, per_shard: int = 2) -> None:
    size = generate(workdir / "src", layers, per_shard)
    start = time.monotonic()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "pad_checkpoint.py"), str(workdir / "src"),
                    str(workdir / "dst"), "--tp", "4"], check=True)
    elapsed = time.monotonic() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    shard_mib = max(p.stat().st_size for p in (workdir / "src").glob("*.safetensors")) / 2**20
    print(json.dumps({"checkpoint_gib": round(size / 2**30, 2), "largest_shard_mib": round(shard_mib),
                      "seconds": round(elapsed, 1), "peak_rss_mib": round(peak_mib)}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(int(a) for a in sys.argv[2:]))
