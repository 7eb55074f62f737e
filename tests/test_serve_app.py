"""The Serve application: its vLLM command line against the pinned release's source, and the whole
application served for real on a local Ray with vLLM's CPU build and a tiny model built by the test."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

from infra import pins
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "images" / "vllm"))
from qwen2vl_serve.server import ServerArgs, child_environment, command  # noqa: E402

SERVING_PYTHON = REPO_ROOT / ".venv-serving" / "bin" / "python"
WHEEL_CACHE = REPO_ROOT / ".cache" / "vllm-wheels"
ARG_SOURCES = ("vllm/entrypoints/openai/cli_args.py", "vllm/engine/arg_utils.py")


def full_args(tmp_path):
    key = tmp_path / "key"
    key.write_text("secret-value\n")
    return ServerArgs(model="m", served_model_name="qwen2vl", tensor_parallel_size=4, max_model_len=8192,
                      max_num_seqs=16, gpu_memory_utilization=0.9, dtype="float16", revision="abc1234",
                      quantization="awq_marlin", download_dir="/models", api_key_file=str(key))


def flags_of(cmd):
    return [part for part in cmd if part.startswith("--")]


def test_command_carries_every_setting_and_no_secret(tmp_path):
    args = full_args(tmp_path)
    cmd = command(args, 9000)
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "4"
    assert cmd[cmd.index("--max-num-seqs") + 1] == "16"
    assert "secret-value" not in " ".join(cmd) and "--api-key" not in cmd
    env = child_environment(args, base={})
    assert env["VLLM_API_KEY"] == "secret-value" and env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"


def test_unknown_app_args_are_refused():
    with pytest.raises(ValueError, match="unknown serve application args: tensor_parallel"):
        ServerArgs.from_mapping({"model": "m", "served_model_name": "q", "tensor_parallel": 4})


@pytest.mark.download
def test_every_flag_exists_in_the_pinned_vllm_release(tmp_path):
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    wheels = list(WHEEL_CACHE.glob(f"vllm-{pins.VLLM_VERSION}-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", f"vllm=={pins.VLLM_VERSION}",
                        "-d", str(WHEEL_CACHE)], check=True, timeout=600)
        wheels = list(WHEEL_CACHE.glob(f"vllm-{pins.VLLM_VERSION}-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        source = "\n".join(wheel.read(name).decode() for name in ARG_SOURCES)
    missing = [flag for flag in flags_of(command(full_args(tmp_path), 9000))
               if f'"{flag}"' not in source and f"'{flag}'" not in source]
    assert not missing, f"flags absent from vLLM {pins.VLLM_VERSION}: {missing}"


def serving_env():
    if not SERVING_PYTHON.exists():
        pytest.fail("the serving virtualenv is missing: run `make install-serving` (make test does)")
    return {**os.environ, "PYTHONPATH": ""}


@pytest.mark.server
def test_installed_cpu_vllm_parses_the_same_command(tmp_path):
    code = (
        "import sys, json; sys.path.insert(0, 'images/vllm');"
        "from qwen2vl_serve.server import ServerArgs, command;"
        "from vllm.entrypoints.launchers.cli_args import make_arg_parser;"
        "from vllm.utils.argparse_utils import FlexibleArgumentParser;"
        "args = ServerArgs(**json.loads(sys.argv[1]));"
        "parsed = make_arg_parser(FlexibleArgumentParser()).parse_args(command(args, 9000)[3:]);"
        "print(json.dumps({'tp': parsed.tensor_parallel_size, 'seqs': parsed.max_num_seqs,"
        " 'name': parsed.served_model_name}))"
    )
    args = {k: v for k, v in full_args(tmp_path).__dict__.items() if k not in ("extra_env", "extra_args")}
    proc = subprocess.run([str(SERVING_PYTHON), "-c", code, json.dumps(args)], cwd=REPO_ROOT, env=serving_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert parsed["tp"] == 4 and parsed["seqs"] == 16
    assert parsed["name"] in ("qwen2vl", ["qwen2vl"])


@pytest.mark.server
def test_serve_application_answers_for_real(tmp_path):
    proc = subprocess.run([str(SERVING_PYTHON), "tests/serving/serve_tiny.py", str(tmp_path)], cwd=REPO_ROOT,
                          env=serving_env(), capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (proc.stdout + proc.stderr)[-5000:]
    result = json.loads(lines[-1][len("RESULT "):])
    status, body = result["models"]
    assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == ["qwen2vl"]
    assert result["models_without_key"][0] == 401
    status, body = result["chat"]
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"]
    status, body = result["stream"]
    assert status == 200 and body.rstrip().endswith("data: [DONE]")
    assert result["vllm_pids_while_serving"], "vLLM did not run as a child process"
    assert result["vllm_pids_after_shutdown"] == [], "vLLM outlived the Serve replica"
    print(f"time to first answer through Ray Serve: {result['time_to_first_answer_s']} s")
    (REPO_ROOT / ".cache").mkdir(exist_ok=True)
    (REPO_ROOT / ".cache" / "serve-timing.json").write_text(json.dumps({"time_to_first_answer_s":
                                                                        result["time_to_first_answer_s"]}))
