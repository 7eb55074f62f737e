"""Every wait on a local server or a load generator ends by a deadline, with a message naming what it
waited for (the CPU vLLM once stalled with one request running and a test hung until its timeout)."""

import argparse
import os
import socket
import sys

import pytest

from scripts import benchmark
from tests.serving.run_vllm import LocalVllm, LocalVllmError


def test_local_vllm_that_never_gets_ready_is_stopped_at_its_deadline(tmp_path):
    # A child that never prints READY, as a stalled vLLM start would not.
    server = LocalVllm(tmp_path, {}, ready_within_s=2, stop_within_s=10,
                       command=[sys.executable, "-c", "import time\nprint('building', flush=True)\ntime.sleep(600)"])
    with pytest.raises(LocalVllmError, match="waited 2 s for the local vLLM to print READY"):
        server.start()
    assert server.process.poll() is not None, "the child outlived the deadline"
    with pytest.raises(ProcessLookupError):
        os.kill(server.process.pid, 0)


def test_local_vllm_that_exits_before_ready_says_so_with_its_log(tmp_path):
    server = LocalVllm(tmp_path, {}, ready_within_s=60,
                       command=[sys.executable, "-c", "import sys\nsys.stderr.write('no model here\\n')\nsys.exit(3)"])
    with pytest.raises(LocalVllmError, match=r"exited \(code 3\) before READY(.|\n)*no model here"):
        server.start()


def test_vllms_benchmark_that_never_ends_fails_at_its_deadline(tmp_path):
    # In place of vLLM's benchmark: a program that waits forever, as a client on a stream that never ends.
    hang = tmp_path / "python"
    hang.write_text("#!/bin/sh\nexec sleep 600\n")
    hang.chmod(0o755)
    args = argparse.Namespace(vllm_python=str(hang), base_url="http://127.0.0.1:9", model="m", tokenizer="t",
                              input_len=4, output_len=4, requests=8, concurrency=2, timeout=2.0)
    with pytest.raises(RuntimeError, match="waited 2 s for vLLM's benchmark to finish 8 requests at concurrency 2"):
        benchmark.theirs(args, None)


def test_our_client_on_a_server_that_never_answers_fails_at_its_deadline():
    # A listening socket that is never read: connections open, no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        args = argparse.Namespace(base_url=f"http://127.0.0.1:{silent.getsockname()[1]}", model="m", requests=8,
                                  concurrency=2, output_len=4, timeout=3.0)
        with pytest.raises(RuntimeError, match="waited 3 s for our smoke client to finish 8 requests at concurrency 2"):
            benchmark.ours(args, "key")
