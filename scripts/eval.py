#!/usr/bin/env python3
"""Run one cost-bounded evaluation: a fresh eval stack, `pulumi up` (which waits for the smoke Job), a
report (JSON and Markdown, with cost), then destroy, on success, failure, timeout and Ctrl-C alike.

    python scripts/eval.py [--model REPO] [--revision REV] [--gpu GPU] [--tp N] [--ttl-hours H]
                           [--timeout-minutes M] [--stop-grace-minutes M] [--keep] [--report-dir reports/]

Needs the Pulumi CLI v3.211.0 or newer (stack tags on self-managed backends), a `pulumi login`, the template
stack `eval` (`pulumi stack init eval`, its secrets set with `pulumi config set --secret`), and the cloud
credentials of Pulumi.eval.yaml. Exit 0 when the evaluation passed, 1 when it failed, 2 when it was refused
before anything was created.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.evaluation.lifecycle import (  # noqa: E402
    CliWorkspace,
    EvalOptions,
    EvalRefused,
    require_cli,
    run_evaluation,
)


def main(argv: list[str] | None = None, workspace_factory=CliWorkspace) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", dest="model_repo")
    parser.add_argument("--revision", dest="model_revision")
    parser.add_argument("--gpu", dest="gpu_type")
    parser.add_argument("--tp", dest="tensor_parallel_size", type=int)
    parser.add_argument("--ttl-hours", type=int)
    parser.add_argument("--timeout-minutes", type=float, default=120.0)
    parser.add_argument("--stop-grace-minutes", type=float, default=30.0,
                        help="after a timeout or Ctrl-C, how long the cancelled update may take to exit")
    parser.add_argument("--keep", action="store_true", help="keep a passing stack until its TTL")
    parser.add_argument("--report-dir", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    options = EvalOptions(**{k: v for k, v in vars(args).items()})
    workspace = workspace_factory()
    try:
        require_cli(workspace)
    except EvalRefused as error:
        print(error)
        return 2
    try:
        result = run_evaluation(workspace, options)
    except EvalRefused as error:
        print(f"evaluation refused, nothing was created: {error}")
        return 2
    print(f"{result.stack}: {result.outcome}; report {result.report_path}; "
          f"{'destroyed' if result.destroyed else 'NOT destroyed'}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
