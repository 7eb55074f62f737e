"""vLLM's OpenAI-compatible server as a child process: its command line, start, readiness and stop.

Only flags that exist in the pinned vLLM release and in today's CPU build are used (the tests parse
this command with the installed vLLM's own argument parser).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


class ServerStartError(RuntimeError):
    """vLLM exited or did not become ready; the message carries the end of its log."""


@dataclass(frozen=True)
class ServerArgs:
    model: str
    served_model_name: str
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    gpu_memory_utilization: float | None = None
    dtype: str = "auto"
    revision: str | None = None
    quantization: str | None = None
    download_dir: str | None = None
    api_key_file: str | None = None
    # Seconds to wait for /health: a 72B download and load can take most of an hour.
    ready_timeout_s: float = 3600.0
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # Further vLLM flags, for flags that exist only in some vLLM releases (not used by the RayService).
    extra_args: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "ServerArgs":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown serve application args: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)


def command(args: ServerArgs, port: int, host: str = "127.0.0.1") -> list[str]:
    """The vLLM OpenAI server command line for these args (no secret on it: the key goes by env)."""
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", args.model,
        "--served-model-name", args.served_model_name,
        "--tensor-parallel-size", str(args.tensor_parallel_size),
        "--dtype", args.dtype,
        "--host", host,
        "--port", str(port),
    ]
    optional = {
        "--max-model-len": args.max_model_len,
        "--max-num-seqs": args.max_num_seqs,
        "--gpu-memory-utilization": args.gpu_memory_utilization,
        "--revision": args.revision,
        "--quantization": args.quantization,
        "--download-dir": args.download_dir,
    }
    for flag, value in optional.items():
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + list(args.extra_args)


def child_environment(args: ServerArgs, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(args.extra_env)
    # The pinned vLLM's TP workers must not fork a process that already initialised CUDA.
    env.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    if args.api_key_file:
        # vLLM reads VLLM_API_KEY; passing --api-key would show the key in the process list.
        env["VLLM_API_KEY"] = Path(args.api_key_file).read_text().strip()
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VllmProcess:
    """One vLLM server child process, started and stopped by PID."""

    def __init__(self, args: ServerArgs, log_path: Path) -> None:
        self.args = args
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            command(self.args, self.port),
            env=child_environment(self.args),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches vLLM's workers too
        )
        log.close()

    def healthy(self, timeout: float = 5.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=timeout) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, poll_s: float = 1.0) -> float:
        """Seconds until /health answered; raises ServerStartError when vLLM exits or times out."""
        start = time.monotonic()
        while time.monotonic() - start < self.args.ready_timeout_s:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise ServerStartError(f"vLLM exited with code {code} before it was ready:\n{self.log_tail()}")
            if self.healthy():
                return time.monotonic() - start
            time.sleep(poll_s)
        self.stop()
        raise ServerStartError(f"vLLM was not ready after {self.args.ready_timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(grace_s)
