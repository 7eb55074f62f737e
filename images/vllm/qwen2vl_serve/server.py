"""vLLM's OpenAI-compatible server as a child process: its command line, start, readiness and stop.

The command line is the pinned release's (the tests parse it with the argument definitions of the pinned
vLLM wheel; docs/testing.md).

Process lifecycle: vLLM runs under qwen2vl_serve.group_leader, in a process group of its own; stop()
ends every member of that group, and the leader ends it by itself when the replica is gone.
Logs: vLLM's output goes to the replica's stderr line by line (Ray's worker log, or the container's
stderr with RAY_LOG_TO_STDERR=1: ray/_private/node.py:833-843 in Ray 2.38), and the last lines stay in
memory for the error a failed start raises. Nothing is written to a file.
"""

from __future__ import annotations

import collections
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Callable, Mapping

from qwen2vl_serve.group_leader import end_group, group_members
from qwen2vl_serve.limits import DEFAULT_MAX_IMAGE_MEGAPIXELS, DEFAULT_MAX_REQUEST_MIB, MEGAPIXEL, MIB

TAIL_LINES = 200  # vLLM's last lines kept for ServerStartError (each cut to TAIL_LINE_CHARS)
TAIL_LINE_CHARS = 2000


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
    # When set, the replica serves vLLM's Prometheus metrics (GET /metrics, no key) on 0.0.0.0:metrics_port.
    metrics_port: int | None = None
    # Seconds to wait for /health: a 72B download and load can take most of an hour.
    ready_timeout_s: float = 3600.0
    # The ingress's limits (request_guard.GuardLimits); the stack sets them from maxRequestMib and
    # maxImageMegapixels.
    max_request_bytes: int = DEFAULT_MAX_REQUEST_MIB * MIB
    max_image_pixels: int = DEFAULT_MAX_IMAGE_MEGAPIXELS * MEGAPIXEL
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


def quantization_flag(value: str | None) -> str | None:
    """vLLM's --quantization value for a configured one: `none` means "no flag", because 0.6.3's parser
    accepts only QUANTIZATION_METHODS keys or None (vllm/engine/arg_utils.py:447-450,
    vllm/model_executor/layers/quantization/__init__.py:32-56), and none of those keys is "none"."""
    return None if value in (None, "none") else value


# The one substitution the tests make in the image's code path (docs/testing.md): a command run in place of
# `python -m vllm.entrypoints.openai.api_server`, given the same arguments. Unset in the image; the tests set
# it to vLLM's CPU build, which stands in for the pinned CUDA engine.
ENGINE_STANDIN_ENV = "QWEN2VL_ENGINE_STANDIN"


def engine_program() -> list[str]:
    standin = os.environ.get(ENGINE_STANDIN_ENV)
    return shlex.split(standin) if standin else [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]


def command(args: ServerArgs, port: int, host: str = "127.0.0.1") -> list[str]:
    """The pinned vLLM's OpenAI server command line for these args (no secret on it: the key goes by env)."""
    cmd = [
        *engine_program(),
        "--model", args.model,
        "--served-model-name", args.served_model_name,
        "--tensor-parallel-size", str(args.tensor_parallel_size),
        "--dtype", args.dtype,
        "--host", host,
        "--port", str(port),
        # Prompts are user data: without this vLLM 0.6.3 logs every prompt and its token ids in full
        # (vllm/engine/arg_utils.py:1105,1112; entrypoints/openai/api_server.py:477-480; entrypoints/logger.py).
        "--disable-log-requests",
    ]
    optional = {
        "--max-model-len": args.max_model_len,
        "--max-num-seqs": args.max_num_seqs,
        "--gpu-memory-utilization": args.gpu_memory_utilization,
        "--revision": args.revision,
        # The tokenizer follows --revision in 0.6.3 (vllm/config.py:147-148), but say so: the processor does
        # not (qwen2_vl.py:651,667,786 load it with no revision), which is why app.py hands vLLM a local
        # snapshot of the revision when it has to download (model_files.download_revision).
        "--tokenizer-revision": args.revision,
        "--quantization": quantization_flag(args.quantization),
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


def pinned_source(args: ServerArgs, download: Callable[..., Path] | None = None) -> ServerArgs:
    """Args whose model is a local snapshot of the revision when vLLM would otherwise download it by hub
    name: then weights, tokenizer and processor all come from the revision (model_files.download_revision).
    A model already on disk (the model-lock path) is left as it is."""
    if args.revision is None or Path(args.model).exists():
        return args
    if download is None:
        from qwen2vl_serve.model_files import download_revision as download
    return replace(args, model=str(download(args.model, args.revision, args.download_dir)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VllmProcess:
    """One vLLM server, led by qwen2vl_serve.group_leader in its own process group; started and stopped
    by PID and process group."""

    def __init__(self, args: ServerArgs, program: list[str] | None = None) -> None:
        """`program`: a command to lead instead of vLLM's (the tests' stand-in process trees)."""
        self.args = args
        self.program = program
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._relay: threading.Thread | None = None
        self.stopped = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # By file, so the leader starts whatever the child's PYTHONPATH is.
        leader = [sys.executable, str(Path(__file__).with_name("group_leader.py")), "--parent", str(os.getpid()), "--"]
        self.process = subprocess.Popen(
            leader + (self.program or command(self.args, self.port)),
            env=child_environment(self.args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches vLLM's workers too
        )
        self._relay = threading.Thread(target=self._relay_output, args=(self.process.stdout,), daemon=True,
                                       name="vllm-output")
        self._relay.start()

    def _relay_output(self, stream: IO[bytes], sink: IO[bytes] | None = None) -> None:
        """Copies vLLM's output to the replica's stderr, keeping the last lines for error messages."""
        sink = sink or sys.stderr.buffer
        for line in iter(stream.readline, b""):
            self.tail.append(line.decode(errors="replace").rstrip("\n")[:TAIL_LINE_CHARS])
            try:
                sink.write(line)
                sink.flush()
            except (OSError, ValueError):
                pass
        stream.close()

    def healthy(self, timeout: float = 5.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=timeout) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(list(self.tail)[-lines:])

    def exited(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def wait_ready(self, poll_s: float = 1.0) -> float:
        """Seconds until /health answered; raises ServerStartError when vLLM exits or times out."""
        start = time.monotonic()
        while time.monotonic() - start < self.args.ready_timeout_s:
            if self.exited():
                code = None if self.process is None else self.process.returncode
                raise ServerStartError(f"vLLM exited with code {code} before it was ready:\n{self.log_tail()}")
            if self.healthy():
                return time.monotonic() - start
            time.sleep(poll_s)
        self.stop()
        raise ServerStartError(f"vLLM was not ready after {self.args.ready_timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 20.0) -> None:
        """Ends vLLM's whole process group, also when its leader has already exited (a TP worker may
        outlive it): SIGTERM, then SIGKILL after `grace_s`."""
        if self.process is None or self.stopped:
            return
        self.stopped = True  # once: the group id could later name someone else's group
        pgid = self.process.pid  # start_new_session: the leader's pid is the group's id
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(grace_s + 5)  # the leader gives the group grace_s, then SIGKILLs what is left
        except subprocess.TimeoutExpired:
            pass
        if group_members(pgid):
            end_group(pgid, grace_s)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(grace_s)
        if self._relay is not None:
            self._relay.join(grace_s)
