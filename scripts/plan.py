#!/usr/bin/env python3
"""Offline plan of a stack: runs the real Pulumi program under strict mocks and shows what it would do.

    python scripts/plan.py --stack eval [--json] [--show-inputs] [--quiet]

Prints a summary first (preflight, placement, cost, warnings, the plan: what passed and what did not),
then the details and the resource tree; `--quiet` prints only the summary.
Exit 0 when the stack would deploy; 1 with the config or preflight error when it would not, or when
`pulumi up` would refuse what a preview accepts (prod without a resolved model lock).
No Pulumi CLI, credentials or network needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402

from infra.offline.engine import StackFileError, run_plan  # noqa: E402
from infra.offline.report import plan_document, print_plan  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stack", default="eval", help="stack name: reads Pulumi.<stack>.yaml (default eval)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--show-inputs", action="store_true", help="show each resource's inputs (secrets masked)")
    parser.add_argument("--quiet", action="store_true", help="only the summary: no details, resource tree or outputs")
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    try:
        result = run_plan(args.stack)
    except StackFileError as error:
        console.print(f"[red]Cannot plan stack {args.stack}:[/red] {error}")
        return 1
    if args.json:
        print(json.dumps(plan_document(result), indent=2, sort_keys=True))
    else:
        print_plan(console, result, show_inputs=args.show_inputs, quiet=args.quiet)
    return 0 if result.ok and not result.up_refusals else 1


if __name__ == "__main__":
    sys.exit(main())
