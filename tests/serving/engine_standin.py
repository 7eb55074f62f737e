"""Stands in for the pinned vLLM's OpenAI server, `python -m vllm.entrypoints.openai.api_server ARGS`, where
the Serve application runs in the image environment (docs/testing.md): checks ARGS with the pinned
release's argument parser (tests/serving/pinned_vllm_args.py), then becomes vLLM's CPU build with the same
ARGS, less the flags that build refuses. Run with the serving virtualenv's Python:

    QWEN2VL_ENGINE_STANDIN=".venv-serving/bin/python tests/serving/engine_standin.py"

(qwen2vl_serve.server.ENGINE_STANDIN_ENV). A command line the pinned release refuses ends it with exit code 2
and the reason, so the replica's start fails as it would in the image.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "images" / "vllm")]

from qwen2vl_serve.server import ENGINE_STANDIN_ENV  # noqa: E402
from tests.serving.pinned_vllm_args import parse_pinned  # noqa: E402
from infra import pins  # noqa: E402
from tests.vllm_release import WHEEL_CACHE, release_wheel  # noqa: E402

SERVING_VENV = ROOT / ".venv-serving"
ENGINE_MODULE = "vllm.entrypoints.openai.api_server"
# Flags of the pinned release that the CPU build refuses, each dropped with the reason it changes nothing.
CPU_BUILD_DROPS = {
    # Later releases log no request unless --enable-log-requests, and refuse the old flag.
    "--disable-log-requests": "the CPU build does not log requests by default",
}


def standin_environment() -> dict[str, str]:
    """What the Serve application's environment needs to start this stand-in instead of the engine."""
    return {ENGINE_STANDIN_ENV: f"{SERVING_VENV / 'bin' / 'python'} {Path(__file__).resolve()}"}


def host_paths() -> dict[str, Path]:
    """What the stand-in reads, by the path it reads it at -> where that is on the host (a sandbox binds
    them read-only): the CPU build's virtualenv and interpreter, this program and what it imports, and the
    pinned wheel (fetched first: a sandbox cannot bind a folder that does not exist yet, as in a fresh clone
    whose other test groups have not downloaded it)."""
    release_wheel("vllm", pins.VLLM_VERSION)
    venv = Path(os.path.realpath(SERVING_VENV))
    interpreter = Path(os.path.realpath(SERVING_VENV / "bin" / "python")).parents[1]
    paths = {str(SERVING_VENV): venv, str(interpreter): interpreter, str(WHEEL_CACHE): Path(os.path.realpath(WHEEL_CACHE))}
    for part in ("tests", "infra", "images/vllm/qwen2vl_serve"):
        paths[str(ROOT / part)] = ROOT / part
    return paths


def cpu_build_args(argv: list[str]) -> list[str]:
    return [arg for arg in argv if arg not in CPU_BUILD_DROPS]


def main(argv: list[str]) -> None:
    try:
        parse_pinned(argv)
    except ValueError as error:
        print(f"engine stand-in: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    # exec: the process the Serve application started is vLLM's API server itself, as in the image.
    os.execv(sys.executable, [sys.executable, "-m", ENGINE_MODULE, *cpu_build_args(argv)])


if __name__ == "__main__":
    main(sys.argv[1:])
