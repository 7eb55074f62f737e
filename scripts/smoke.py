#!/usr/bin/env python3
"""Smoke-test a deployed OpenAI-compatible endpoint: model list, text chat, image chat, a streamed burst.

    python scripts/smoke.py --base-url URL --model qwen2vl [--api-key-env VAR] [--concurrency 16] [--report out.json]

Exit 0 when every check passes, 1 naming the failed checks, 2 on bad arguments. The checks are the
ones the in-cluster smoke Job runs (images/vllm/qwen2vl_serve/smoke.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "images" / "vllm"))

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: E402

from qwen2vl_serve import smoke  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    console = Console(highlight=False)
    if not console.is_terminal:
        return smoke.main(argv, printer=console.print)
    with Progress(TextColumn("burst"), BarColumn(), MofNCompleteColumn(), console=console, transient=True) as bar:
        task = bar.add_task("burst", total=None)
        return smoke.main(argv, progress=lambda done, total: bar.update(task, completed=done, total=total),
                          printer=console.print)


if __name__ == "__main__":
    sys.exit(main())
