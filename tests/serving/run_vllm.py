"""Starts vLLM's OpenAI server (the CPU build) on 127.0.0.1 with the tiny model; prints
"READY <port> <model dir>" and serves until its standard input closes, then stops vLLM by PID.

    .venv-serving/bin/python tests/serving/run_vllm.py WORKDIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "images" / "vllm"), str(ROOT)]

from qwen2vl_serve.server import ServerArgs, VllmProcess  # noqa: E402
from tests.serving.tiny_model import build  # noqa: E402


def main(workdir: Path) -> None:
    # Big enough that the server, not the load generators, limits throughput on a 2-core machine.
    model_dir = build(workdir / "tiny-qwen2", hidden=int(os.environ.get("TINY_HIDDEN", "256")),
                      layers=int(os.environ.get("TINY_LAYERS", "2")))
    key_file = workdir / "api-key"
    key_file.write_text(os.environ.get("SMOKE_API_KEY", "local-test-key"))
    args = ServerArgs(model=str(model_dir), served_model_name="qwen2vl", max_model_len=512, max_num_seqs=16,
                      dtype="bfloat16", api_key_file=str(key_file), ready_timeout_s=400,
                      extra_env={"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"},
                      # Repeated benchmark runs send the same prompts; cached prefixes would make each run
                      # faster than the one before and bias whichever client runs later.
                      extra_args=("--no-enable-prefix-caching",))
    server = VllmProcess(args)
    cpus = os.environ.get("VLLM_TEST_CPUS")
    if cpus:
        # Keep the server off the cores a load generator measures from (vLLM inherits the affinity).
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    server.start()
    try:
        seconds = server.wait_ready()
        print(f"READY {server.port} {model_dir} {seconds:.1f}", flush=True)
        sys.stdin.read()  # until the test closes our standard input
    finally:
        server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
