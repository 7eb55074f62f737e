#!/usr/bin/env python3
"""Resolve the model revision through the hub and write the lock (commit, every file's size and sha256).

    python scripts/lock_model.py [--repo REPO] [--revision REV] [--tp 4 ...] [--out infra/model.lock.json]

Refuses (exit 1) a revision whose config.json does not split at the TP sizes, or whose weight shards are
incomplete. HF_ENDPOINT selects a hub mirror; HF_TOKEN (or --token-file) a token for gated repositories.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402

from infra import pins  # noqa: E402
from infra.model_lock import LOCK_PATH, LockError, resolve_lock  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=pins.MODEL_REPO)
    parser.add_argument("--revision", default=pins.MODEL_REVISION)
    parser.add_argument("--tp", type=int, action="append", help="TP sizes the config must split at (default 4)")
    parser.add_argument("--out", type=Path, default=LOCK_PATH)
    parser.add_argument("--token-file", type=Path)
    args = parser.parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)
    token = args.token_file.read_text().strip() if args.token_file else os.environ.get("HF_TOKEN")
    try:
        lock = resolve_lock(args.repo, args.revision, args.tp or [4], endpoint=os.environ.get("HF_ENDPOINT"),
                            token=token, progress=lambda message: console.print(escape(message)))
    except LockError as error:
        console.print(f"[red]not locked:[/red] {escape(str(error))}")
        return 1
    args.out.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    total = sum(f["size"] for f in lock["files"])
    console.print(f"locked {lock['repo']}@{lock['commit']}: {len(lock['files'])} files, {total / 2**30:.2f} GiB "
                  f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
