#!/usr/bin/env python3
"""Pad an AWQ checkpoint's MLP intermediate size with exact zeros so it loads at a tensor-parallel size.

    python scripts/pad_checkpoint.py SRC DST --tp 4        # smallest size that loads at TP 4 (preflight rules)
    python scripts/pad_checkpoint.py SRC DST --multiple 1024

SRC is only read; DST must not exist and is left absent when anything fails. Works shard by shard.
Exit 0 on success, 1 when the checkpoint cannot be padded exactly, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from infra.checkpoint.padding import PaddingError, pad_checkpoint, read_config, text_config  # noqa: E402
from infra.preflight import (  # noqa: E402
    ModelConfigError,
    PreflightInputError,
    PreflightRequest,
    padded_intermediate_size,
)


def target_size(src: Path, tp: int | None, multiple: int | None) -> int:
    config = read_config(src)
    current = text_config(config)["intermediate_size"]
    if multiple:
        return -(-current // multiple) * multiple
    # The same rules the preflight judges with: Marlin on an Ampere GPU at the pinned vLLM.
    size = padded_intermediate_size(PreflightRequest(config, tp, "A100-80GB", max_model_len=2048), [tp])
    if size is None:
        raise PaddingError(f"no padded intermediate_size loads at TP {tp}")
    return size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--tp", type=int, help="pad to the smallest size that loads at this TP")
    how.add_argument("--multiple", type=int, help="pad to the next multiple of this number")
    args = parser.parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)
    if (args.tp is not None and args.tp < 1) or (args.multiple is not None and args.multiple < 1):
        console.print("error: --tp and --multiple must be positive")
        return 2
    started = time.monotonic()
    try:
        target = target_size(args.src, args.tp, args.multiple)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=not console.is_terminal) as bar:
            task = bar.add_task("padding shards", total=None)

            def report(shard: str, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, description=f"padded {shard}")
                if not console.is_terminal:
                    console.print(f"[{done}/{total}] {shard}")

            plan = pad_checkpoint(args.src, args.dst, target, report)
    except (PaddingError, ModelConfigError, PreflightInputError) as error:
        console.print(f"[red]cannot pad:[/red] {escape(str(error))}")
        return 1
    console.print(f"intermediate_size {plan.intermediate} -> {plan.target} in {len(plan.shards)} shard(s), "
                  f"{time.monotonic() - started:.1f} s; written to {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
