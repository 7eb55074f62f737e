#!/usr/bin/env python3
"""What to buy for a load: every GPU shape that serves it, predicted throughput, latency and cost, and the
cheapest that meets the goals (docs/capacity.md).

    python scripts/capacity.py --rps 2 [--prompt-tokens 1000] [--output-tokens 300] [--images 1]
        [--ttft-p95 3] [--tokens-per-s 20] [--cloud aws|gcp] [--region us-east-1] [--budget 50]
        [--max-nodes 16] [--model Qwen/Qwen2-VL-72B-Instruct-AWQ] [--json] [--all] [--write-stack NAME]

Exit 0 with a chosen shape; 1 when no shape meets the goals within the constraints; 2 on bad arguments.
`--json` prints {"options": [...], "chosen": {...}}; `--write-stack NAME` writes Pulumi.NAME.yaml for the
chosen shape, which `make plan STACK=NAME` then checks end to end. No credentials or network needed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from infra import pins  # noqa: E402
from infra.capacity.performance import Load  # noqa: E402
from infra.capacity.planner import Constraints, Goals, plan_for_model  # noqa: E402
from infra.catalog import CatalogError, model_catalog  # noqa: E402
from infra.config import PROJECT  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHOWN = 12


def stack_config(chosen: dict, model: str, budget: float | None) -> dict:
    """The stack file for the chosen shape: the pool's shape, TP, bounds and the engine's limits."""
    config = {
        f"{PROJECT}:cloud": chosen["cloud"],
        f"{PROJECT}:region": chosen["region"],
        f"{PROJECT}:gpuInstanceType": chosen["instance_type"],
        f"{PROJECT}:tensorParallelSize": str(chosen["tp"]),
        f"{PROJECT}:gpuNodesMin": str(chosen["autoscaling"]["min_nodes"]),
        f"{PROJECT}:gpuNodesMax": str(chosen["autoscaling"]["max_nodes"]),
        f"{PROJECT}:maxModelLen": str(chosen["max_model_len"]),
        f"{PROJECT}:maxNumSeqs": str(chosen["max_num_seqs"]),
    }
    if chosen["cloud"] == "gcp":
        # A placeholder the plan accepts; set the real project before `pulumi up`.
        config[f"{PROJECT}:gcpProject"] = "my-gpu-project"
    if model != pins.MODEL_REPO:
        config[f"{PROJECT}:modelRepo"] = model
    if budget is not None:
        config[f"{PROJECT}:maxHourlyUsd"] = format(budget, "g")
    return {"config": config}


def _table(result: dict, show_all: bool) -> Table:
    table = Table(title="GPU shapes that serve this load (cheapest meeting the goals first)")
    for column in ("gpu", "instance", "TP", "rep/node", "nodes", "$/h", "$/M out tok", "out tok/s",
                   "TTFT p95 s", "tok/s/req", "goals"):
        table.add_column(column)
    rows = result["options"] if show_all else result["options"][:SHOWN]
    for option in rows:
        p = option["predicted"]
        table.add_row(option["gpu"], option["instance_type"], str(option["tp"]), str(option["replicas_per_node"]),
                      str(option["nodes"]), f"{option['usd_per_hour']:.2f}",
                      "-" if math.isinf(option["usd_per_million_output_tokens"]) else
                      f"{option['usd_per_million_output_tokens']:.2f}",
                      f"{p['output_tokens_per_s']:g}", "-" if math.isinf(p["ttft_p95_s"]) else f"{p['ttft_p95_s']:.2f}",
                      f"{p['tokens_per_s_per_request']:.0f}",
                      "yes" if option["meets_goals"] else "no: " + "; ".join(option["why_not"]))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=pins.MODEL_REPO, help="a repository from infra/catalog/models.yaml")
    parser.add_argument("--rps", type=float, required=True, help="target requests per second")
    parser.add_argument("--prompt-tokens", type=int, default=1000, help="text tokens per prompt (default 1000)")
    parser.add_argument("--output-tokens", type=int, default=300, help="tokens per answer (default 300)")
    parser.add_argument("--images", type=float, default=1.0, help="images per request (default 1)")
    parser.add_argument("--ttft-p95", type=float, help="goal: time to first token, 95th percentile, seconds")
    parser.add_argument("--tokens-per-s", type=float, help="goal: output tokens per second per request")
    parser.add_argument("--cloud", choices=("aws", "gcp", "any"), default="any")
    parser.add_argument("--region", help="price region (with --cloud; default us-east-1 / us-central1)")
    parser.add_argument("--budget", type=float, help="constraint: most US dollars per hour")
    parser.add_argument("--max-nodes", type=int, default=16, help="constraint: most GPU nodes (default 16)")
    parser.add_argument("--json", action="store_true", help='print {"options": [...], "chosen": {...}}')
    parser.add_argument("--all", action="store_true", help=f"list every option (default: the first {SHOWN})")
    parser.add_argument("--write-stack", metavar="NAME", help="write Pulumi.NAME.yaml for the chosen shape")
    parser.add_argument("--stack-dir", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    if args.rps <= 0 or args.prompt_tokens < 1 or args.output_tokens < 1 or args.images < 0 or args.max_nodes < 1:
        console.print("--rps, --prompt-tokens, --output-tokens and --max-nodes must be positive, --images not negative")
        return 2
    if args.model not in model_catalog():
        console.print(f"--model {args.model} is not in infra/catalog/models.yaml; known: {', '.join(model_catalog())}")
        return 2
    clouds = ("aws", "gcp") if args.cloud == "any" else (args.cloud,)
    try:
        result = plan_for_model(
            args.model, load=Load(args.prompt_tokens, args.output_tokens, args.images), rps=args.rps,
            goals=Goals(args.ttft_p95, args.tokens_per_s),
            constraints=Constraints(clouds, args.region, args.budget, args.max_nodes))
    except CatalogError as error:
        console.print(str(error))
        return 2
    chosen = result["chosen"]
    if args.write_stack and chosen:
        path = args.stack_dir / f"Pulumi.{args.write_stack}.yaml"
        path.write_text(yaml.safe_dump(stack_config(chosen, args.model, args.budget), sort_keys=False))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        console.print(_table(result, args.all))
        if chosen:
            console.print(f"Chosen: {chosen['gpu']} on {chosen['nodes']} x {chosen['instance_type']} ({chosen['cloud']} "
                          f"{chosen['region']}), TP {chosen['tp']}, {chosen['replicas_per_node']} replica(s) per node, "
                          f"${chosen['usd_per_hour']:.2f}/h, ${chosen['usd_per_million_output_tokens']:.2f} per million "
                          f"output tokens; predictions +/-{chosen['predicted']['error_band']:.0%} (docs/capacity.md).")
            if args.write_stack:
                console.print(f"Wrote Pulumi.{args.write_stack}.yaml; check it with `make plan STACK={args.write_stack}`.")
        else:
            console.print("No shape meets the goals within the constraints; relax a goal, the budget or --max-nodes.")
    return 0 if chosen else 1


if __name__ == "__main__":
    sys.exit(main())
