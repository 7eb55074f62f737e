"""Serves the tiny model through the real Serve application on a local Ray, queries it, prints JSON.

Run with the serving virtualenv's Python (vLLM CPU build + Ray Serve):
    .venv-serving/bin/python tests/serving/serve_tiny.py WORKDIR
Everything it starts (Ray, Serve, vLLM) it stops before it exits.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "images" / "vllm"), str(ROOT)]

from tests.serving.tiny_model import build  # noqa: E402

API_KEY = "test-key-for-the-tiny-model"


def request(url: str, body: dict | None = None, key: str | None = API_KEY, timeout: float = 120):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def vllm_processes(model_dir: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "vllm.entrypoints.openai.api_server" in cmdline and str(model_dir) in cmdline:
                pids.append(int(entry.name))
    return pids


def main(workdir: Path) -> dict:
    import ray
    from ray import serve

    from qwen2vl_serve.app import build_app
    from qwen2vl_serve.server import free_port

    model_dir = build(workdir / "tiny-qwen2")
    key_file = workdir / "api-key"
    key_file.write_text(API_KEY + "\n")
    os.environ.update({
        "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        # Ray's workers inherit this; in the image the package is installed instead.
        "PYTHONPATH": str(ROOT / "images" / "vllm"),
    })
    port = free_port()
    result: dict = {}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        args = {
            "model": str(model_dir), "served_model_name": "qwen2vl", "tensor_parallel_size": 1,
            "max_model_len": 512, "max_num_seqs": 16, "dtype": "bfloat16", "api_key_file": str(key_file),
            "ready_timeout_s": 400,
        }
        started = time.monotonic()
        serve.run(build_app(args), name="qwen2vl", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        result["models"] = request(f"{base}/v1/models")
        result["models_without_key"] = request(f"{base}/v1/models", key=None)
        chat = {"model": "qwen2vl", "messages": [{"role": "user", "content": "the model serves"}],
                "max_tokens": 16, "temperature": 0.8}
        result["chat"] = request(f"{base}/v1/chat/completions", chat)
        result["time_to_first_answer_s"] = round(time.monotonic() - started, 1)
        result["stream"] = request(f"{base}/v1/chat/completions", {**chat, "stream": True})
        result["vllm_pids_while_serving"] = vllm_processes(model_dir)
    finally:
        serve.shutdown()
        ray.shutdown()
    deadline = time.monotonic() + 30
    while vllm_processes(model_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    result["vllm_pids_after_shutdown"] = vllm_processes(model_dir)
    return result


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(Path(sys.argv[1]))))
