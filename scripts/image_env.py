#!/usr/bin/env python3
"""Writes the requirements of the image environment: images/vllm/requirements.lock, line for line and hash
for hash, without the packages that need a GPU or are the engine itself. Nothing is resolved again, so the
environment holds exactly the image's versions of everything else (Ray, the web stack, transformers).

    python scripts/image_env.py OUTPUT   (`make install-image-env` runs it, then installs OUTPUT --no-deps)

The real-Serve tests, the rehearsal's Ray head and workers and the smoke client run in that environment,
on the image's own Ray. Standard library only: the interpreter that makes the virtualenvs runs it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.lock import normalise  # noqa: E402

LOCK = ROOT / "images" / "vllm" / "requirements.lock"

# Left out of the image environment, each for one reason. vLLM's CPU build (.venv-serving) stands in for
# the engine as the child process the Serve application starts (docs/testing.md lists every stand-in).
LEFT_OUT = {
    "vllm": "the engine itself: its CUDA build cannot run here; vLLM's CPU build stands in for it",
    "torch": "the lock's is PyPI's CUDA build (with about 2.5 GB of CUDA libraries); only the engine uses it, "
             "and the CPU build of that release is not on the package index",
    "torchvision": "built against the lock's CUDA torch; only the engine's image processor loads it",
    "xformers": "CUDA attention kernels for the engine",
    "triton": "a GPU kernel compiler for the engine",
}
# The CUDA runtime libraries torch brings as wheels (nvidia-cublas-cu12, nvidia-nccl-cu12, ...): GPU only.
# nvidia-ml-py (NVML's Python bindings) is plain Python and stays.
CUDA_LIBRARIES = re.compile(r"^nvidia-.*-cu\d+$")
# A locked package's block: `name==version \` and its hash and comment lines, up to the next package.
BLOCK = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+.*?(?=^[A-Za-z0-9]|\Z)", re.M | re.S)


def left_out(name: str) -> str | None:
    """Why package `name` is not in the image environment, or None when it is."""
    name = normalise(name)
    if name in LEFT_OUT:
        return LEFT_OUT[name]
    if CUDA_LIBRARIES.match(name):
        return "a CUDA library (torch's GPU runtime)"
    return None


def image_env_requirements(lock_text: str) -> str:
    return "".join(block.group(0) for block in BLOCK.finditer(lock_text) if left_out(block.group(1)) is None)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    Path(argv[0]).write_text(image_env_requirements(LOCK.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
