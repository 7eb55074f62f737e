#!/usr/bin/env python3
"""The same load through our smoke client and through vLLM's own serving benchmark, side by side.

    python scripts/benchmark.py --base-url URL --model qwen2vl --tokenizer DIR --api-key-env VAR \\
        [--requests 64] [--concurrency 16] [--output-len 64] [--repeats 3] [--vllm-python PATH] [--json]
    python scripts/benchmark.py --serve-tiny [...] [--json-out FILE]     (what `make bench` runs)

Both send `requests` streamed chat completions, `concurrency` at a time, each generating exactly
`output-len` tokens (vLLM's ignore_eos), and report output tokens per second. `--serve-tiny` starts vLLM's
CPU build on 127.0.0.1 with a tiny model first (tests/serving/run_vllm.py) and stops it after.
Every run of either client has a deadline (`--timeout`); a run that misses it fails naming what it
waited for. A measurement, not a test: the test suite runs this only to see that it works.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "images" / "vllm"), str(ROOT)]

from qwen2vl_serve.smoke import Client, Smoke  # noqa: E402
from tests.serving.run_vllm import TINY_MODEL, LocalVllm  # noqa: E402

# vLLM's benchmark, called through its library entry point (the `vllm` console script needs the
# distribution to be named "vllm", which the CPU build is not).
VLLM_BENCH = (
    "import json, sys\n"
    "from vllm.benchmarks.serve import add_cli_args, main\n"
    "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
    "parser = FlexibleArgumentParser()\n"
    "add_cli_args(parser)\n"
    "result = main(parser.parse_args(sys.argv[1:]))\n"
    "print('RESULT ' + json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float))}))\n"
)


def run_client(cmd: list[str], env: dict, what: str, args: argparse.Namespace, cwd: str | None = None) -> dict:
    """Runs one load generator as a child process with the run's deadline (a child can be ended wherever it
    waits; a thread cannot) and returns the JSON it prints on its `RESULT ` line."""
    try:
        proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired as expired:
        stderr = expired.stderr.decode(errors="replace") if isinstance(expired.stderr, bytes) else expired.stderr or ""
        raise RuntimeError(f"waited {args.timeout:.0f} s for {what} to finish {args.requests} requests at concurrency "
                           f"{args.concurrency}; it did not:\n{stderr[-3000:]}") from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def measure_ours(args: argparse.Namespace, api_key: str | None) -> dict:
    """Our smoke client's run, in this process (the child `ours` starts)."""
    client = Client(args.base_url, api_key, timeout_s=args.timeout, deadline_s=args.timeout)
    smoke = Smoke(client, args.model, max_tokens=args.output_len, extra_fields={"ignore_eos": True},
                  require_content=False)
    smoke.load(1, 1)  # a warm-up request, as vLLM's benchmark sends one before it measures
    return smoke.load(args.requests, args.concurrency)


def ours(args: argparse.Namespace, api_key: str | None) -> dict:
    cmd = [sys.executable, __file__, "--measure-ours", "--base-url", args.base_url, "--model", args.model,
           "--requests", str(args.requests), "--concurrency", str(args.concurrency),
           "--output-len", str(args.output_len), "--timeout", str(args.timeout)]
    env = {**os.environ, "BENCH_API_KEY": api_key or ""}
    return run_client(cmd + ["--api-key-env", "BENCH_API_KEY"] if api_key else cmd, env, "our smoke client", args)


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
        return run_client(cmd, env, "vLLM's benchmark", args, cwd=scratch)


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


def machine() -> dict:
    """What the figures were measured on, for the docs that quote them."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average_at_start": os.getloadavg()}


def serve_tiny(args: argparse.Namespace, workdir: Path):
    """vLLM's CPU build on 127.0.0.1 with the tiny model, pinned to core 0 and the load generators to the
    other cores (so both clients measure the server, not their competition with it for a core)."""
    cores = sorted(os.sched_getaffinity(0))
    key = secrets.token_hex(16)
    server_cpus = {"VLLM_TEST_CPUS": str(cores[0])} if len(cores) > 1 else {}
    server = LocalVllm(workdir, {"SMOKE_API_KEY": key, **server_cpus}, ready_within_s=args.timeout)
    server.start()
    if server_cpus:
        os.sched_setaffinity(0, set(cores[1:]))  # both clients inherit it
    args.base_url, args.tokenizer = server.url, server.model_dir
    os.environ["BENCH_API_KEY"], args.api_key_env = key, "BENCH_API_KEY"
    return server


def print_table(result: dict) -> None:
    print(f"{'':<22}{'smoke client':>14}{'vllm bench':>14}")
    for key, label in (("output_tokens_per_s", "output tokens/s"), ("ttft_p50_s", "TTFT p50 (s)"),
                       ("itl_p50_s", "ITL p50 (s)"), ("output_tokens", "output tokens")):
        print(f"{label:<22}{result['smoke_client'][key]:>14.3f}{result['vllm_bench'][key]:>14.3f}")
    print(f"throughput ratio (ours / vLLM's): {result['throughput_ratio']:.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url")
    p.add_argument("--model", default="qwen2vl")
    p.add_argument("--tokenizer", help="tokenizer directory or repo id for vLLM's benchmark")
    p.add_argument("--api-key-env")
    p.add_argument("--serve-tiny", action="store_true",
                   help="start vLLM's CPU build with a tiny model on 127.0.0.1 and measure that")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--input-len", type=int, default=16)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--cpus", help="pin both load generators to these CPUs (e.g. 1), away from the server")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs of each client; medians compared")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds for each run of either client (and for --serve-tiny's server to be ready)")
    p.add_argument("--vllm-python", default=str(ROOT / ".venv-serving" / "bin" / "python"))
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--json-out", type=Path, help="also write the result, with the machine and date, here")
    p.add_argument("--measure-ours", action="store_true", help=argparse.SUPPRESS)  # the child `ours` starts
    args = p.parse_args(argv)
    if args.measure_ours:
        key = os.environ.get(args.api_key_env) if args.api_key_env else None
        print("RESULT " + json.dumps(measure_ours(args, key)))
        return 0
    if not args.serve_tiny and not (args.base_url and args.tokenizer):
        p.error("give --base-url and --tokenizer, or --serve-tiny")
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})  # both clients inherit it
    measured_on = machine()
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        server = serve_tiny(args, Path(scratch)) if args.serve_tiny else None
        try:
            result = compare(args)
        except (RuntimeError, OSError) as error:
            print(f"benchmark failed: {error}", file=sys.stderr)
            return 1
        finally:
            if server is not None:
                server.stop()
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        record = {**result, "machine": {**measured_on, "load_average_at_end": os.getloadavg()},
                  "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  "server": f"tiny Qwen2 {TINY_MODEL} on vLLM's CPU build" if args.serve_tiny else args.base_url}
        args.json_out.write_text(json.dumps(record, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
