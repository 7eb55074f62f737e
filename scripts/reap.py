#!/usr/bin/env python3
"""Destroy evaluation stacks past their TTL (tag qwen2vl:ttl-expires-at). Dry run unless --yes.

    python scripts/reap.py          # lists what it would destroy
    python scripts/reap.py --yes    # destroys them (for a CronJob or CI schedule: docs/cost.md)
"""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.evaluation.lifecycle import AutomationWorkspace, reap  # noqa: E402
from scripts.eval import PULUMI_MISSING  # noqa: E402


def main(argv: list[str] | None = None, workspace_factory=AutomationWorkspace) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--yes", action="store_true", help="destroy (default: only list)")
    args = parser.parse_args(argv)
    if workspace_factory is AutomationWorkspace and shutil.which("pulumi") is None:
        print(PULUMI_MISSING)
        return 2
    reap(workspace_factory(), datetime.now(timezone.utc), dry_run=not args.yes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
