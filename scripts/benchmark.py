#!/usr/bin/env python3
"""The same load through our smoke client and through vLLM's own serving benchmark, side by side.

    python scripts/benchmark.py --base-url URL --model qwen2vl --tokenizer DIR --api-key-env VAR \\
        [--requests 64] [--concurrency 16] [--output-len 64] [--repeats 3] [--vllm-python PATH] [--json]

Both send `requests` streamed chat completions, `concurrency` at a time, each generating exactly
`output-len` tokens (vLLM's ignore_eos), and report output tokens per second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "images" / "vllm"))

from qwen2vl_serve.smoke import Client, Smoke  # noqa: E402

# vLLM's benchmark, called through its library entry point (the `vllm` console script needs the
# distribution to be named "vllm", which the CPU build is not).
VLLM_BENCH = (
    "import json, sys\n"
    "from vllm.benchmarks.serve import add_cli_args, main\n"
    "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
    "parser = FlexibleArgumentParser()\n"
    "add_cli_args(parser)\n"
    "result = main(parser.parse_args(sys.argv[1:]))\n"
    "print('BENCH ' + json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float))}))\n"
)


def ours(args: argparse.Namespace, api_key: str | None) -> dict:
    smoke = Smoke(Client(args.base_url, api_key, timeout_s=300), args.model, max_tokens=args.output_len,
                  extra_fields={"ignore_eos": True}, require_content=False)
    smoke.load(1, 1)  # a warm-up request, as vLLM's benchmark sends one before it measures
    return smoke.load(args.requests, args.concurrency)


def theirs(args: argparse.Namespace, api_key: str | None) -> dict:
    env = dict(os.environ)
    if api_key:
        env["OPENAI_API_KEY"] = api_key  # what vLLM's OpenAI backends send as the bearer token
    with tempfile.TemporaryDirectory() as scratch:
        cmd = [
            args.vllm_python, "-c", VLLM_BENCH,
            "--backend", "openai-chat", "--base-url", args.base_url, "--endpoint", "/v1/chat/completions",
            "--model", args.model, "--tokenizer", args.tokenizer, "--dataset-name", "random",
            "--random-input-len", str(args.input_len), "--random-output-len", str(args.output_len),
            "--num-prompts", str(args.requests), "--max-concurrency", str(args.concurrency),
            "--ignore-eos", "--disable-tqdm", "--seed", "0",
        ]
        proc = subprocess.run(cmd, env=env, cwd=scratch, capture_output=True, text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"vLLM's benchmark failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("BENCH "):])


def median_run(runs: list[dict], key: str) -> dict:
    return sorted(runs, key=lambda run: run[key])[len(runs) // 2]


def compare(args: argparse.Namespace) -> dict:
    """Alternates the two clients `repeats` times and compares their median runs: on a shared machine a
    single run is at the mercy of whatever else the cores are doing."""
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    # One untimed pass of the full load first: the server compiles and caches its kernels for each new
    # batch shape, and whichever client ran first would otherwise pay for all of it.
    ours(args, api_key)
    mine_runs, vllm_runs = [], []
    for _ in range(args.repeats):
        mine_runs.append(ours(args, api_key))
        vllm_runs.append(theirs(args, api_key))
    mine = median_run(mine_runs, "throughput_tokens_per_s")
    vllm = median_run(vllm_runs, "output_throughput")
    ratio = mine["throughput_tokens_per_s"] / vllm["output_throughput"]
    return {
        "requests": args.requests, "concurrency": args.concurrency, "output_len": args.output_len,
        "smoke_client": {"output_tokens_per_s": mine["throughput_tokens_per_s"], "ttft_p50_s": mine["ttft_p50_s"],
                         "itl_p50_s": mine["itl_p50_s"], "output_tokens": mine["output_tokens"]},
        "vllm_bench": {"output_tokens_per_s": vllm["output_throughput"], "ttft_p50_s": vllm["median_ttft_ms"] / 1000,
                       "itl_p50_s": vllm["median_itl_ms"] / 1000, "output_tokens": vllm["total_output_tokens"]},
        "throughput_ratio": ratio,
        "runs": {"smoke_client": [r["throughput_tokens_per_s"] for r in mine_runs],
                 "vllm_bench": [r["output_throughput"] for r in vllm_runs]},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--tokenizer", required=True, help="tokenizer directory or repo id for vLLM's benchmark")
    p.add_argument("--api-key-env")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--input-len", type=int, default=16)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--cpus", help="pin both load generators to these CPUs (e.g. 1), away from the server")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs of each client; medians compared")
    p.add_argument("--vllm-python", default=str(ROOT / ".venv-serving" / "bin" / "python"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})  # both clients inherit it
    result = compare(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'':<22}{'smoke client':>14}{'vllm bench':>14}")
    for key, label in (("output_tokens_per_s", "output tokens/s"), ("ttft_p50_s", "TTFT p50 (s)"),
                       ("itl_p50_s", "ITL p50 (s)"), ("output_tokens", "output tokens")):
        print(f"{label:<22}{result['smoke_client'][key]:>14.3f}{result['vllm_bench'][key]:>14.3f}")
    print(f"throughput ratio (ours / vLLM's): {result['throughput_ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
