#!/usr/bin/env python3
"""Destroy evaluation stacks past their TTL (tag qwen2vl:ttl-expires-at). Dry run unless --yes.

    python scripts/reap.py          # lists what it would destroy
    python scripts/reap.py --yes    # destroys them (for a CronJob or CI schedule: docs/cost.md)
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.evaluation.lifecycle import CliWorkspace, EvalRefused, reap, require_cli  # noqa: E402


def main(argv: list[str] | None = None, workspace_factory=CliWorkspace) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--yes", action="store_true", help="destroy (default: only list)")
    args = parser.parse_args(argv)
    workspace = workspace_factory()
    try:
        require_cli(workspace)  # tags (the TTL) need Pulumi CLI >= 3.211 on self-managed backends
    except EvalRefused as error:
        print(error)
        return 2
    reap(workspace, datetime.now(timezone.utc), dry_run=not args.yes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
