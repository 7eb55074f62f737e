"""Starts vLLM's OpenAI server (the CPU build) on 127.0.0.1 with the tiny model; prints
"READY <port> <model dir> <seconds>" and serves until its standard input closes (or it gets SIGTERM),
then stops vLLM by PID.

    .venv-serving/bin/python tests/serving/run_vllm.py WORKDIR

`LocalVllm` runs this script from the project's virtualenv (the tests, `make bench`): every wait on it
has a deadline and a message naming what it waited for, and it is stopped by PID.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Mapping

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "images" / "vllm"), str(ROOT)]

SERVING_PYTHON = ROOT / ".venv-serving" / "bin" / "python"
# The tiny model's size (env overrides it), for `make bench` and the real-vLLM tests: big enough that the server, not the load
# generators, limits throughput on a 2-core machine, and with these random weights every smoke request
# streams some content (hidden 256 / 2 layers ended one request at once, with no content).
TINY_MODEL = {"TINY_HIDDEN": "768", "TINY_LAYERS": "6"}


class LocalVllmError(RuntimeError):
    """The local vLLM did not start or stop in time; the message names the wait and ends with its log."""


class LocalVllm:
    """This script as a child process: `start()` returns once vLLM answers /health, within `ready_within_s`
    (building the tiny model included); `stop()` closes its standard input and waits `stop_within_s`, then
    kills it by PID."""

    def __init__(self, workdir: Path, env: Mapping[str, str], ready_within_s: float = 600.0,
                 stop_within_s: float = 60.0, command: list[str] | None = None) -> None:
        self.workdir = workdir
        # Another command in its place only where a test checks the waits themselves.
        self.command = command or [str(SERVING_PYTHON), __file__, str(workdir)]
        self.env = dict(env)
        self.ready_within_s = ready_within_s
        self.stop_within_s = stop_within_s
        self.log_path = workdir / "run_vllm.log"
        self.process: subprocess.Popen | None = None
        self.url = self.model_dir = ""
        self.ready_s = 0.0

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def start(self) -> "LocalVllm":
        if not Path(self.command[0]).exists():
            raise LocalVllmError(f"{self.command[0]} is missing: run `make install-serving` (make test does)")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, cwd=ROOT,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                            env={**os.environ, "PYTHONPATH": "", **self.env,
                                                 "VLLM_READY_WITHIN_S": str(self.ready_within_s)}, text=True)
        lines: queue.Queue = queue.Queue()

        def relay(stdout) -> None:
            for line in stdout:
                lines.put(line)
            lines.put(None)  # end of output: the process is exiting

        threading.Thread(target=relay, args=(self.process.stdout,), daemon=True).start()
        deadline = time.monotonic() + self.ready_within_s
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self.kill()
                raise LocalVllmError(f"waited {self.ready_within_s:.0f} s for the local vLLM to print READY "
                                     f"(tiny model built, /health answering); its log ends:\n{self.log_tail()}")
            if line is None:
                self.kill()
                raise LocalVllmError(f"the local vLLM exited (code {self.process.returncode}) before READY; "
                                     f"its log ends:\n{self.log_tail()}")
            if line.startswith("READY "):
                _, port, self.model_dir, ready_s = line.split()
                self.url, self.ready_s = f"http://127.0.0.1:{port}", float(ready_s)
                return self

    def kill(self) -> None:
        """SIGTERM (main() below then stops vLLM), SIGKILL if that does not end it in `stop_within_s`."""
        self.process.terminate()
        try:
            self.process.wait(self.stop_within_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(self.stop_within_s)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.stdin.close()  # main() below stops vLLM by PID and exits
        try:
            self.process.wait(self.stop_within_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise LocalVllmError(f"waited {self.stop_within_s:.0f} s for the local vLLM (PID {self.process.pid}) "
                                 "to stop after its standard input closed; ended it by signal") from None


def main(workdir: Path) -> None:
    from qwen2vl_serve.server import ServerArgs, VllmProcess, command
    from tests.serving.engine_standin import ENGINE_MODULE, cpu_build_args
    from tests.serving.tiny_model import build

    # SIGTERM runs the `finally` below too, so vLLM never outlives this process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    model_dir = build(workdir / "tiny-qwen2", hidden=int(os.environ.get("TINY_HIDDEN", TINY_MODEL["TINY_HIDDEN"])),
                      layers=int(os.environ.get("TINY_LAYERS", TINY_MODEL["TINY_LAYERS"])))
    key_file = workdir / "api-key"
    key_file.write_text(os.environ.get("SMOKE_API_KEY", "local-test-key"))
    args = ServerArgs(model=str(model_dir), served_model_name="qwen2vl", max_model_len=512, max_num_seqs=16,
                      dtype="bfloat16", api_key_file=str(key_file),
                      ready_timeout_s=float(os.environ.get("VLLM_READY_WITHIN_S", "600")),
                      extra_env={"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"},
                      # Repeated benchmark runs send the same prompts; cached prefixes would make each run
                      # faster than the one before and bias whichever client runs later.
                      extra_args=("--no-enable-prefix-caching",))
    server = VllmProcess(args)
    # vLLM's CPU build itself, no Ray: the application's command line less the flags that build refuses
    # (tests/serving/engine_standin.py); --no-enable-prefix-caching is the CPU build's own flag.
    server.program = [sys.executable, "-m", ENGINE_MODULE, *cpu_build_args(command(args, server.port)[3:])]
    cpus = os.environ.get("VLLM_TEST_CPUS")
    if cpus:
        # Keep the server off the cores a load generator measures from (vLLM inherits the affinity).
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    server.start()
    try:
        seconds = server.wait_ready()
        print(f"READY {server.port} {model_dir} {seconds:.1f}", flush=True)
        sys.stdin.read()  # until the test closes our standard input
    finally:
        server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
