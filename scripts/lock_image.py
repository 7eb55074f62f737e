#!/usr/bin/env python3
"""Writes images/vllm/requirements.lock: the serving image's Python dependencies, every one pinned with
its hashes, resolved for Linux x86_64 and the image's Python from the versions in infra/pins.py; and
images/vllm/build-requirements.lock: the build tools (setuptools, wheel) that build the lock's sdist-only
packages (pyairports), also hash-pinned. The Dockerfile installs the build tools first and the lock with
--no-build-isolation, so pip downloads no unhashed build environment.

    python scripts/lock_image.py [--check]

Needs `uv` (pip install uv) and the package index. `--check` exits 1 when the lock's vLLM, Ray or torch
versions differ from the pins (no network needed).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra import pins  # noqa: E402

LOCK = ROOT / "images" / "vllm" / "requirements.lock"
BUILD_LOCK = ROOT / "images" / "vllm" / "build-requirements.lock"
BUILD_TOOLS = ("setuptools", "wheel")
PLATFORM = "x86_64-manylinux_2_28"


def requirements() -> list[str]:
    return [f"vllm=={pins.VLLM_VERSION}", f"ray[serve]=={pins.RAY_VERSION}", *pins.IMAGE_CONSTRAINTS]


def locked_versions(text: str) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^ \\\n]+)", text, re.M)}


def mismatches(text: str) -> list[str]:
    versions = locked_versions(text)
    expected = {"vllm": pins.VLLM_VERSION, "ray": pins.RAY_VERSION, "torch": pins.TORCH_VERSION}
    return [f"{name}: lock has {versions.get(name)}, pins say {want}" for name, want in expected.items()
            if versions.get(name) != want]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        problems = mismatches(LOCK.read_text()) if LOCK.exists() else [f"{LOCK} is missing"]
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    uv = shutil.which("uv")
    if uv is None:
        print("uv is not installed: pip install uv", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        for target, wanted in ((LOCK, requirements()), (BUILD_LOCK, BUILD_TOOLS)):
            source = Path(scratch) / "requirements.in"
            source.write_text("\n".join(wanted) + "\n")
            subprocess.run([uv, "pip", "compile", source.name, "--python-version", pins.PYTHON_VERSION,
                            "--python-platform", PLATFORM, "--generate-hashes", "--no-header", "-o", str(target)],
                           cwd=scratch, check=True)
    problems = mismatches(LOCK.read_text())
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
