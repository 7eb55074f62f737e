#!/usr/bin/env python3
"""Will vLLM load and serve this model at this TP on this GPU? Answered before any GPU is billed.

    python scripts/preflight.py --model-config config.json --quantization awq_marlin --tp 4 --gpu A100-80GB
    python scripts/preflight.py --model Qwen/Qwen2-VL-7B-Instruct-AWQ --tp 8 --gpu L4 --json

Exit 0: vLLM would load and serve. 1: it would not (reasons and fixes printed). 2: bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from infra import pins  # noqa: E402
from infra.preflight import (  # noqa: E402
    ModelConfigError,
    PreflightInputError,
    PreflightRequest,
    catalog_request,
    run_preflight,
)
from infra.catalog import gpu_catalog, model_catalog  # noqa: E402
from infra.preflight.kernels import QUANTIZATION_CHOICES  # noqa: E402
from infra.preflight.memory import MEMORY_LABELS  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-config", type=Path, help="a Hugging Face config.json")
    source.add_argument("--model", help=f"a catalog model, REPO[@REVISION]: {', '.join(model_catalog())}")
    p.add_argument("--revision", help="model revision (checked against known-bad revisions)")
    p.add_argument("--quantization", default="auto", choices=QUANTIZATION_CHOICES)
    p.add_argument("--tp", "--tensor-parallel-size", dest="tp", type=int, required=True)
    p.add_argument("--gpu", required=True, choices=sorted(gpu_catalog()))
    p.add_argument("--vllm-version", default=pins.VLLM_VERSION)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.90)
    p.add_argument("--dtype", default="auto", choices=("auto", "float16", "bfloat16"))
    p.add_argument("--json", action="store_true", help="print {ok, checks, memory} as JSON")
    return p


def build_request(args: argparse.Namespace) -> PreflightRequest:
    common = dict(
        tensor_parallel_size=args.tp,
        gpu=args.gpu,
        quantization=args.quantization,
        vllm_version=args.vllm_version,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        gpu_memory_utilization=args.gpu_memory_utilization,
        dtype=args.dtype,
    )
    if args.model:
        return catalog_request(args.model, revision=args.revision, **common)
    try:
        config = json.loads(args.model_config.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PreflightInputError(f"cannot read --model-config {args.model_config}: {exc}") from None
    return PreflightRequest(model_config=config, revision=args.revision, **common)


def print_human(console: Console, verdict) -> None:
    table = Table(title=f"Preflight: vLLM {verdict.request.vllm_version}, {verdict.kernel}, "
                  f"TP {verdict.request.tensor_parallel_size} on {verdict.request.gpu}", show_lines=False)
    for column in ("check", "result", "message", "fix"):
        table.add_column(column, overflow="fold")
    for check in verdict.checks:
        result = "ok" if check.ok else ("[yellow]warn[/yellow]" if check.severity == "warning" else "[red]FAIL[/red]")
        table.add_row(check.name, result, escape(check.message), escape(check.fix))
    console.print(table)
    memory = Table(title="Memory per GPU", show_header=False)
    for key, value in verdict.memory.as_dict().items():
        memory.add_row(MEMORY_LABELS[key], str(value))
    console.print(memory)
    console.print("[green]vLLM would load and serve.[/green]" if verdict.ok else "[red]vLLM would not serve.[/red]")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    try:
        verdict = run_preflight(build_request(args))
    except (PreflightInputError, ModelConfigError) as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        return 2
    if args.json:
        document = verdict.as_dict()
        print(json.dumps({"ok": document["ok"], "checks": document["checks"], "memory": document["memory"],
                          "kernel": document["kernel"]}, indent=2))
    else:
        print_human(console, verdict)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
