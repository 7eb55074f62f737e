"""The commands that reach the endpoint: exported by the stack, printed by the plan, naming the Service
and port the workload really creates, and working as written against an OpenAI-compatible server."""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from infra import outputs
from infra.workload import access
from infra.workload.spec import SERVE_PORT
from tests.conftest import REPO_ROOT

API_KEY = "test-key-0f3c"


def test_every_stack_exports_the_access_commands(plan_of):
    for stack in ("eval", "prod", "local"):
        commands = plan_of(stack).outputs[outputs.ACCESS]
        assert set(commands) == set(access.ORDER)
        assert f"pulumi stack output {outputs.API_KEY} --show-secrets --stack {stack}" in commands[access.API_KEY]


def test_port_forward_names_the_service_and_port_the_rayservice_creates(plan_of):
    result = plan_of("eval")
    rayservice = next(r for r in result.resources if r.type == "kubernetes:ray.io/v1:RayService")
    service = rayservice.inputs["spec"]["serveService"]["metadata"]["name"]
    head = rayservice.inputs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    serve_port = int(next(p["containerPort"] for p in head["ports"] if p["name"] == "serve"))  # protobuf: a float
    namespace = result.outputs[outputs.NAMESPACE]
    assert result.outputs[outputs.ACCESS][access.PORT_FORWARD] == (
        f"kubectl -n {namespace} port-forward service/{service} {serve_port}:{serve_port}")


def test_kubeconfig_comes_from_the_stack_output_where_the_stack_made_the_cluster(plan_of):
    eval_plan = plan_of("eval")
    assert outputs.KUBECONFIG in eval_plan.outputs
    assert eval_plan.outputs[outputs.ACCESS][access.KUBECONFIG].startswith(
        f"pulumi stack output {outputs.KUBECONFIG} --show-secrets --stack eval > kubeconfig-eval.yaml")
    # An existing cluster is reached through the user's own kubeconfig context.
    assert plan_of("local").outputs[outputs.ACCESS][access.KUBECONFIG] == "kubectl config use-context kind-qwen2vl"


def test_the_plan_prints_the_commands():
    proc = subprocess.run([sys.executable, "scripts/plan.py", "--stack", "eval"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [line.strip() for line in proc.stdout.splitlines()]
    assert "kubectl -n qwen2vl port-forward service/qwen2vl-openai 8000:8000" in lines
    assert any(line.startswith("curl -sS http://127.0.0.1:8000/v1/chat/completions") for line in lines)


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions like vLLM's server, when the key is right; records each request."""

    seen: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.path, self.headers.get("Authorization"), body))
        if self.headers.get("Authorization") != f"Bearer {API_KEY}":
            self.send_response(401)
            self.end_headers()
            return
        answer = json.dumps({"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": "hello from the fake"}}],
                             "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture()
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    FakeOpenAI.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def run_as_written(command: str, port: int, python: str = sys.executable) -> subprocess.CompletedProcess:
    """The command as a user pastes it, with the port-forward's local port swapped for the fake's."""
    command = command.replace(f"127.0.0.1:{SERVE_PORT}", f"127.0.0.1:{port}").replace("python -c", f"{python} -c", 1)
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", access.API_KEY_ENV: API_KEY})


def test_the_curl_command_sends_the_key_and_a_valid_chat_request(plan_of, fake_server):
    proc = run_as_written(plan_of("eval").outputs[outputs.ACCESS][access.CURL], fake_server)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["choices"][0]["message"]["content"] == "hello from the fake"
    path, authorization, body = FakeOpenAI.seen[0]
    assert path == "/v1/chat/completions" and authorization == f"Bearer {API_KEY}"
    assert body["model"] == plan_of("eval").outputs[outputs.SERVED_MODEL]


def test_the_openai_client_command_works_as_written(plan_of, fake_server):
    serving_python = REPO_ROOT / ".venv-serving" / "bin" / "python"
    if not serving_python.exists():
        pytest.skip("the OpenAI client is installed in .venv-serving (make install-serving)")
    proc = run_as_written(plan_of("eval").outputs[outputs.ACCESS][access.OPENAI], fake_server, str(serving_python))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hello from the fake"
    assert FakeOpenAI.seen[0][1] == f"Bearer {API_KEY}"
