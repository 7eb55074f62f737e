"""Pinned releases' own source files (vLLM's, the image's transformers), read from their wheels (downloaded
once into .cache). Needs no test package: vLLM's stand-in (tests/serving/engine_standin.py) reads them
from another virtualenv."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from infra import pins

REPO_ROOT = Path(__file__).resolve().parent.parent
WHEEL_CACHE = REPO_ROOT / ".cache" / "vllm-wheels"


def pinned_vllm_source(*names: str) -> str:
    """The text of `names` (paths inside the wheel, such as vllm/engine/metrics.py), joined."""
    return release_source("vllm", pins.VLLM_VERSION, *names)


def release_source(package: str, version: str, *names: str) -> str:
    """The text of `names` inside `package`'s wheel at `version` (downloaded once into WHEEL_CACHE), joined."""
    with zipfile.ZipFile(release_wheel(package, version)) as wheel:
        return "\n".join(wheel.read(name).decode() for name in names)


def release_wheel(package: str, version: str) -> Path:
    """`package`'s wheel at `version` in WHEEL_CACHE, downloaded there first if it is not."""
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    wheels = list(WHEEL_CACHE.glob(pattern))
    if not wheels:
        # Into a folder of its own, then renamed into place: test groups run side by side (make test), and
        # another one must never open a wheel half written.
        with tempfile.TemporaryDirectory(dir=WHEEL_CACHE) as scratch:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", f"{package}=={version}",
                            "-d", scratch], check=True, timeout=600)
            for wheel in Path(scratch).glob(pattern):
                os.replace(wheel, WHEEL_CACHE / wheel.name)
        wheels = list(WHEEL_CACHE.glob(pattern))
    return wheels[0]
