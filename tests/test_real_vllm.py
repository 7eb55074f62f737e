"""The smoke suite and the benchmark against a real vLLM OpenAI server (vLLM's CPU build) that the
test starts on 127.0.0.1 with a tiny model it builds, and stops by PID."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "images" / "vllm"))
from qwen2vl_serve import smoke  # noqa: E402

SERVING_PYTHON = REPO_ROOT / ".venv-serving" / "bin" / "python"
API_KEY = "real-vllm-test-key"
pytestmark = pytest.mark.server
# On a multi-core machine the server gets core 0 and the benchmark's load generators the rest, so the
# two clients measure the server rather than their competition with it for a core.
SERVER_CPUS = {"VLLM_TEST_CPUS": "0"} if len(os.sched_getaffinity(0)) > 1 else {}
CLIENT_CPUS = (["--cpus", ",".join(str(c) for c in sorted(os.sched_getaffinity(0) - {0}))]
               if SERVER_CPUS else [])


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    if not SERVING_PYTHON.exists():
        pytest.fail("the serving virtualenv is missing: run `make install-serving` (make test does)")
    workdir = tmp_path_factory.mktemp("vllm")
    proc = subprocess.Popen([str(SERVING_PYTHON), "tests/serving/run_vllm.py", str(workdir)], cwd=REPO_ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "SMOKE_API_KEY": API_KEY, "PYTHONPATH": "", **SERVER_CPUS,
                                 # Large enough that the server, not the clients, limits throughput.
                                 "TINY_HIDDEN": "768", "TINY_LAYERS": "6"})
    line = proc.stdout.readline()
    while line and not line.startswith("READY "):  # training the tokenizer prints to stdout first
        line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        log = (workdir / "vllm.log").read_text() if (workdir / "vllm.log").exists() else ""
        pytest.fail(f"vLLM did not start: {line!r}\n{log[-3000:]}")
    _, port, model_dir, ready_s = line.split()
    print(f"vLLM ready after {ready_s} s")
    yield {"url": f"http://127.0.0.1:{port}", "model_dir": model_dir, "pid": proc.pid}
    proc.stdin.close()  # run_vllm.py stops vLLM by PID and exits
    proc.wait(60)


def test_smoke_passes_against_real_vllm(vllm_server, tmp_path, monkeypatch):
    monkeypatch.setenv("SMOKE_KEY", API_KEY)
    report_path = tmp_path / "report.json"
    lines = []
    # The tiny model is text-only (this machine's vLLM cannot load a vision model: see the closing note),
    # so the image check runs against the fault server's PNG decoder instead (tests/test_smoke.py).
    code = smoke.main(["--base-url", vllm_server["url"], "--model", "qwen2vl", "--api-key-env", "SMOKE_KEY",
                       "--checks", "models,text_chat,burst", "--concurrency", "16", "--report", str(report_path)],
                      printer=lines.append)
    assert code == 0, "\n".join(lines)
    report = json.loads(report_path.read_text())
    assert report["latency"]["requests"] == 16 and report["latency"]["output_tokens"] >= 16
    print("\n".join(lines))


def test_real_vllm_rejects_a_wrong_key(vllm_server, monkeypatch):
    monkeypatch.setenv("SMOKE_KEY", "not-the-key")
    lines = []
    assert smoke.main(["--base-url", vllm_server["url"], "--model", "qwen2vl", "--api-key-env", "SMOKE_KEY",
                       "--checks", "models"], printer=lines.append) == 1
    assert "HTTP 401" in "\n".join(lines)


def test_benchmark_agrees_with_vllms_own_within_15_percent(vllm_server, monkeypatch):
    monkeypatch.setenv("SMOKE_KEY", API_KEY)
    proc = subprocess.run([sys.executable, "scripts/benchmark.py", "--base-url", vllm_server["url"], "--model",
                           "qwen2vl", "--tokenizer", vllm_server["model_dir"], "--api-key-env", "SMOKE_KEY",
                           "--requests", "192", "--concurrency", "16", "--output-len", "64", "--json", *CLIENT_CPUS],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    print(json.dumps(result, indent=2))
    (REPO_ROOT / ".cache").mkdir(exist_ok=True)
    (REPO_ROOT / ".cache" / "benchmark.json").write_text(json.dumps(result, indent=2))
    assert result["smoke_client"]["output_tokens"] == result["vllm_bench"]["output_tokens"] == 192 * 64
    assert 0.85 <= result["throughput_ratio"] <= 1.15, result
