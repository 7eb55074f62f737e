"""Serves the tiny model through the real Serve application on a local Ray, exercises it, prints JSON.

One Ray and Serve start for all of it, in this order:
1. stop while loading: an application is deleted while its vLLM still loads; its process group must end;
2. serving: the key on every path (only GET /health answers without it), the metrics port, a chat, a
   stream, a refused image URL;
3. restart: vLLM's API server is killed; the replica's health check fails, Serve replaces the replica,
   and the endpoint answers again (with metrics on the same port);
4. shutdown: no process of any vLLM group that ran is left.

Run with the serving virtualenv's Python (vLLM CPU build + Ray Serve):
    .venv-serving/bin/python tests/serving/serve_tiny.py WORKDIR
Everything it starts (Ray, Serve, vLLM) it stops before it exits.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "images" / "vllm"), str(ROOT)]

from qwen2vl_serve.group_leader import group_members  # noqa: E402
from tests.serving.tiny_model import build  # noqa: E402
from tests.waiting import wait_for  # noqa: E402

API_KEY = "test-key-for-the-tiny-model"
# Paths vLLM itself answers without a key (its middleware guards only /v1: api_server.py:438-450 in 0.6.3).
UNGUARDED_BY_VLLM = [("POST", "/tokenize", {"model": "qwen2vl", "prompt": "the model"}),
                     ("POST", "/detokenize", {"model": "qwen2vl", "tokens": [1, 2]}),
                     ("GET", "/version", None), ("GET", "/metrics", None), ("GET", "/v1/models", None)]


def request(url: str, body: dict | None = None, key: str | None = API_KEY, timeout: float = 120,
            method: str | None = None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, headers=headers, method=method or ("POST" if body else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return None, f"{type(error).__name__}: {error}"


def engine_started(leader: int) -> list[int] | None:
    """The group's members once vLLM's engine runs beside its API server and the leader, else None."""
    members = group_members(leader)
    return members if len(members) >= 3 else None


def members_left(pgid: int, seconds: float) -> list[int]:
    """The members of process group `pgid` once it is empty, or those still there after `seconds`."""
    deadline = time.monotonic() + seconds
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.5)
    return group_members(pgid)


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def leaders(model_dir: Path) -> list[int]:
    """Group leaders (qwen2vl_serve.group_leader) running vLLM for this model path."""
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and "group_leader.py" in (line := cmdline(int(p.name))) and f"--model {model_dir} " in line]


def api_servers(pgid: int) -> list[int]:
    return [pid for pid in group_members(pgid)
            if "vllm.entrypoints.openai.api_server" in cmdline(pid) and "group_leader.py" not in cmdline(pid)]


def app_status(name: str) -> str:
    from ray import serve

    app = serve.status().applications.get(name)
    return str(getattr(app.status, "value", app.status)) if app else "ABSENT"


def start_ray(attempts: int = 3) -> None:
    """ray.init, again when the node did not register within Ray's fixed 30 s (ray/_private/node.py in
    Ray 2.60): on a 2-core machine shared with other test runs the GCS can be that slow to answer."""
    import ray

    for attempt in range(1, attempts + 1):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            return
        except Exception as error:  # Ray raises a bare Exception for this
            if "timed out during startup" not in str(error) or attempt == attempts:
                raise
            print(f"ray.init attempt {attempt} timed out during startup; trying again", file=sys.stderr)
            ray.shutdown()


def main(workdir: Path) -> dict:
    import ray
    from ray import serve

    from qwen2vl_serve.app import VLLMServer
    from qwen2vl_serve.server import ServerArgs, free_port

    model_dir = build(workdir / "tiny-qwen2")
    loading_dir = workdir / "tiny-qwen2-loading"  # the same model by another path, to tell the two apart
    loading_dir.symlink_to(model_dir)
    key_file = workdir / "api-key"
    key_file.write_text(API_KEY + "\n")
    os.environ.update({
        "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        # Ray's workers inherit this; in the image the package is installed instead.
        "PYTHONPATH": str(ROOT / "images" / "vllm"),
    })
    port, metrics_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    metrics_url = f"http://127.0.0.1:{metrics_port}"
    args = dict(model=str(model_dir), served_model_name="qwen2vl", tensor_parallel_size=1, max_model_len=512,
                max_num_seqs=16, dtype="bfloat16", api_key_file=str(key_file), ready_timeout_s=900,
                # No torch.compile warm-up: minutes on a shared 2-core machine, and not what is under test.
                extra_args=("--enforce-eager",))
    result: dict = {"groups": []}
    start_ray()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})

        # 1. Stopped while loading.
        loading = VLLMServer.options(name="Loading").bind(ServerArgs(**{**args, "model": str(loading_dir)}))
        serve._run(loading, name="loading", route_prefix="/loading", _blocking=False)
        leader = wait_for("the loading app's vLLM group leader", lambda: leaders(loading_dir), 180)[0]
        # The engine process is up (leader, API server, engine): vLLM is loading the model, not just starting.
        # The snapshot that showed the engine is what is reported: the group also holds short-lived helpers,
        # so a second look a moment later can count fewer.
        members = wait_for("the loading app's vLLM engine process", lambda: engine_started(leader), 600)
        result["groups"].append(leader)
        result["loading"] = {"status_at_delete": app_status("loading"), "members_at_delete": members}
        serve.delete("loading")
        result["loading"]["members_after_delete"] = members_left(leader, 30)

        # 2. Serving.
        started = time.monotonic()
        app = VLLMServer.options(health_check_period_s=2, health_check_timeout_s=30).bind(
            ServerArgs(**args, metrics_port=metrics_port))
        serve.run(app, name="qwen2vl", route_prefix="/")
        result["ready_s"] = round(time.monotonic() - started, 1)
        first = leaders(model_dir)
        result["groups"] += first
        result["models"] = request(f"{base}/v1/models")
        result["without_key"] = {path: request(f"{base}{path}", body, key=None, method=method)[0]
                                 for method, path, body in UNGUARDED_BY_VLLM}
        result["wrong_key"] = request(f"{base}/version", key="not-the-key")[0]
        result["with_key"] = {path: request(f"{base}{path}", body, method=method)[0]
                              for method, path, body in UNGUARDED_BY_VLLM}
        result["health_without_key"] = request(f"{base}/health", key=None)[0]
        result["metrics_port"] = request(f"{metrics_url}/metrics", key=None)
        result["metrics_port_other_path"] = request(f"{metrics_url}/v1/models", key=None)[0]
        chat = {"model": "qwen2vl", "messages": [{"role": "user", "content": "the model serves"}],
                "max_tokens": 16, "temperature": 0.8}
        result["chat"] = request(f"{base}/v1/chat/completions", chat)
        result["stream"] = request(f"{base}/v1/chat/completions", {**chat, "stream": True})
        remote = [{"type": "text", "text": "what is this"},
                  {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data/"}}]
        result["remote_image"] = request(f"{base}/v1/chat/completions",
                                         {**chat, "messages": [{"role": "user", "content": remote}]})
        result["members_while_serving"] = {pgid: group_members(pgid) for pgid in first}

        # 3. vLLM dies; Serve replaces the replica.
        killed = api_servers(first[0])[0]
        os.kill(killed, signal.SIGKILL)
        result["restart"] = {"killed": killed}
        replaced = wait_for("a new vLLM group leader after the kill",
                            lambda: [p for p in leaders(model_dir) if p not in first], 120)
        result["groups"] += replaced
        result["restart"]["old_group_members"] = members_left(first[0], 60)
        wait_for("the endpoint to answer again", lambda: request(f"{base}/v1/models")[0] == 200, 400, poll_s=2)
        result["restart"]["models"] = request(f"{base}/v1/models")
        result["restart"]["metrics_port"] = wait_for(
            "metrics on the same port from the new replica",
            lambda: (answer := request(f"{metrics_url}/metrics", key=None))[0] == 200 and answer, 120)[0]
        result["restart"]["status"] = app_status("qwen2vl")
    finally:
        serve.shutdown()
        ray.shutdown()
    result["members_after_shutdown"] = {pgid: members_left(pgid, 60) for pgid in result["groups"]}
    return result


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(Path(sys.argv[1]))))
