#!/usr/bin/env python3
"""Writes each stack's workload to manifests/<stack>/ for `kubectl apply -k manifests/<stack>`.

    python scripts/render.py [--stack NAME] [--check] [--image REF]

`--check` writes nothing and exits 1 naming the files that differ from what is committed. `--image REF`
sets kustomization.yaml's image override to a pushed image (registry/name:tag or name@sha256:digest), so
`kubectl apply -k` pulls it; the committed manifests keep the image the stack builds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.config import IMAGE_REF, ConfigError  # noqa: E402
from infra.offline.engine import StackFileError, read_stack_config  # noqa: E402
from infra.workload.manifests import render_manifests  # noqa: E402

MANIFESTS = ROOT / "manifests"


def stacks() -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))


def differences(stack: str, files: dict[str, str]) -> list[str]:
    folder = MANIFESTS / stack
    present = {str(p.relative_to(folder)) for p in folder.rglob("*.yaml")} if folder.exists() else set()
    stale = [name for name, text in files.items() if not (folder / name).exists() or (folder / name).read_text() != text]
    extra = sorted(present - set(files))
    return [f"manifests/{stack}/{name}" for name in sorted(stale) + extra]


def write(stack: str, files: dict[str, str]) -> None:
    folder = MANIFESTS / stack
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.rglob("*.yaml"):
        if str(old.relative_to(folder)) not in files:
            old.unlink()
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stack", action="append", help="stack to render (repeatable; default: every stack)")
    parser.add_argument("--check", action="store_true", help="exit 1 when committed manifests are stale")
    parser.add_argument("--image", help="image every container runs (kustomize images override), e.g. "
                        "registry.example.com/ml/qwen2vl-vllm@sha256:<digest>")
    args = parser.parse_args(argv)
    if args.image and not IMAGE_REF.fullmatch(args.image):
        print(f"--image {args.image!r} is not an image reference: expected registry/name:tag or "
              "name@sha256:<64 hex>, e.g. --image registry.example.com/ml/qwen2vl-vllm:v1", file=sys.stderr)
        return 2
    stale = []
    for stack in args.stack or stacks():
        try:
            files = render_manifests(read_stack_config(stack), args.image)
        except (ConfigError, StackFileError) as error:
            print(f"cannot render stack {stack}: {error}", file=sys.stderr)
            return 1
        if args.check:
            stale += differences(stack, files)
        else:
            write(stack, files)
            print(f"manifests/{stack}/: {len(files)} files")
    if stale:
        print("stale manifests (run python scripts/render.py):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
