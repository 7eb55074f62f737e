#!/usr/bin/env python3
"""Rehearse the rendered pods on this machine: the RayService's head and workers started as KubeRay
starts them, its serveConfigV2 submitted as KubeRay submits it, the probes, the paths without the key
and the smoke Job, each container in a sandbox built from its own manifest (docs/rehearsal.md).

    python scripts/rehearse.py --manifests manifests/eval [--report out.json] [--keep-going]

Exit 0 when the pods serve and the smoke Job passes, 1 naming each cause when not, 2 when the rehearsal
cannot run here (missing bubblewrap, not root, no serving virtualenv).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402

from infra.rehearsal.manifests import RehearsalError  # noqa: E402
from infra.rehearsal.run import rehearse  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifests", type=Path, required=True, help="a rendered stack, e.g. manifests/eval")
    p.add_argument("--report", type=Path, help="write the JSON report here")
    p.add_argument("--image-context", type=Path, default=ROOT,
                   help="the image's build context (Dockerfile and COPY sources); default this checkout")
    p.add_argument("--keep-going", action="store_true",
                   help="run the pods even when the static checks already failed (to collect every finding)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console(highlight=False, stderr=True)
    try:
        report = rehearse(args.manifests, keep_going=args.keep_going, image_context=args.image_context,
                          progress=lambda message: console.print(f"[dim]{escape(message)}[/dim]"))
    except RehearsalError as error:
        console.print(f"[red]cannot rehearse:[/red] {escape(str(error))}")
        return 2
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    for name, seconds in report["timings"].items():
        console.print(f"{name:<20} {seconds:>7.1f}")
    for path, status in report["auth"].items():
        console.print(f"without the key: {path:<12} {status}")
    if report["ok"]:
        console.print(f"[green]rehearsal passed[/green] ({len(report['substitutions'])} substitutions, see the report)")
        return 0
    for failure in report["failures"]:
        console.print(f"[red]FAIL[/red] {escape(failure)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
