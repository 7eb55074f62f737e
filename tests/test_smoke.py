"""The smoke library against a fault-injecting server: each fault fails with its own clear message."""

import json
import random
import re
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.fault_server import NAMED_COLOURS, FaultServer, decode_png, quarter_colour

sys.path.insert(0, str(REPO_ROOT / "images" / "vllm"))
from qwen2vl_serve import smoke  # noqa: E402


def run(server, *extra, key="k"):
    lines = []
    code = smoke.main(["--base-url", server.url, "--model", "qwen2vl", "--api-key-env", "SMOKE_KEY",
                       "--concurrency", "4", "--timeout", "2", "--retries", "1", *extra], printer=lines.append)
    return code, "\n".join(lines)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("SMOKE_KEY", "k")
    with FaultServer(hang_s=4) as running:
        yield running


def test_healthy_endpoint_passes_every_check(server, tmp_path):
    report_path = tmp_path / "report.json"
    code, output = run(server, "--report", str(report_path))
    assert code == 0, output
    report = json.loads(report_path.read_text())
    assert report["ok"] and [c["name"] for c in report["checks"]] == list(smoke.CHECKS)
    assert report["latency"]["requests"] == 4 and report["latency"]["output_tokens"] > 0
    assert report["latency"]["ttft_p95_s"] >= report["latency"]["ttft_p50_s"] > 0
    # The image really went out as a decodable PNG data URL, and the answers were judged.
    images = [part for body in server.requests if isinstance(body["messages"][0]["content"], list)
              for part in body["messages"][0]["content"] if part["type"] == "image_url"]
    # One large image, asked about quarter by quarter: larger than the ingress passes, so it is resized.
    assert len(images) == len(smoke.QUARTERS) and len({part["image_url"]["url"] for part in images}) == 1
    url = images[0]["image_url"]["url"]
    assert decode_png(url)[:2] == (1600, 1200)
    by_name = {c["name"]: c["detail"] for c in report["checks"]}
    assert by_name["image_chat"] == "answered " + ", ".join(f"{q} {quarter_colour(url, q)}" for q in smoke.QUARTERS)
    assert by_name["text_chat"].startswith("answered '")
    assert all(body.get("stream") for body in server.requests[-4:])


def test_questions_change_per_run_and_a_seed_repeats_them(server):
    def asked(seed):
        server.requests.clear()
        run(server, "--checks", "text_chat,image_chat", *(["--seed", str(seed)] if seed is not None else []))
        text = server.requests[0]["messages"][0]["content"]
        url = server.requests[1]["messages"][0]["content"][1]["image_url"]["url"]
        return text, tuple(quarter_colour(url, q) for q in smoke.QUARTERS)

    assert asked(7) == asked(7)
    runs = {asked(seed) for seed in range(8)}
    assert len({text for text, _ in runs}) > 1 and len({colour for _, colour in runs}) > 1


@pytest.mark.parametrize("check, words", [
    ("text_chat", "expected an answer naming '"),
    ("image_chat", "expected an answer naming '"),
])
def test_a_wrong_answer_fails_and_says_what_was_expected(server, check, words):
    server.fault = "wrong_answer"
    code, output = run(server, "--checks", check)
    assert code == 1 and f"[{check}] {words}" in output and ", got '" in output, output
    if check == "image_chat":
        assert "got 'Purple.'" in output


def test_no_answer_check_sends_the_same_requests_but_does_not_judge(server):
    server.fault = "wrong_answer"
    code, output = run(server, "--checks", "text_chat,image_chat", "--no-answer-check")
    assert code == 0, output
    assert output.count("answer not checked (--no-answer-check), expected '") == 2
    assert len(server.requests) == 1 + len(smoke.QUARTERS)


class BlindModel:
    """A model that cannot see: it answers image questions with colours from the question's own list (the
    best a blind model can do), at random, or all of them at once."""

    def __init__(self, seed, answer_all=False):
        self.rng = random.Random(seed)
        self.answer_all = answer_all

    def json(self, check, method, path, body):
        question = " ".join(part["text"] for part in body["messages"][0]["content"] if part["type"] == "text")
        listed = [word for word in re.findall(r"[a-z]+", question.lower()) if word in NAMED_COLOURS]
        answer = " ".join(listed) if self.answer_all else self.rng.choice(listed).capitalize() + "."
        return {"choices": [{"message": {"role": "assistant", "content": answer}}]}


def blind_passes(runs, **model):
    passes = 0
    for seed in range(runs):
        try:
            smoke.Smoke(BlindModel(seed + 10_000, **model), "qwen2vl", seed=seed).check_image_chat()
            passes += 1
        except smoke.SmokeFailure:
            pass
    return passes


def test_a_model_that_cannot_see_fails_the_image_check():
    """Guessing passes with (1/6)^4 = 1/1296 (the module docstring); over 600 seeded runs a blind model must
    pass fewer than 1 %."""
    assert blind_passes(600) < 6
    assert blind_passes(50, answer_all=True) == 0
    assert (1 / len(smoke.COLOURS)) ** len(smoke.QUARTERS) < 0.001


def test_a_500_is_not_retried(server):
    server.fault = "http_500"
    code, output = run(server, "--checks", "text_chat", "--retries", "3")
    assert code == 1 and server.posts == 1, output


def test_a_503_is_retried(server):
    server.fault = "flaky_503"
    code, output = run(server, "--checks", "text_chat")
    assert code == 0 and server.posts == 2, output


def test_a_chat_is_not_posted_again_after_the_connection_broke(server):
    server.fault = "drop_after_request"
    code, output = run(server, "--checks", "text_chat", "--retries", "3")
    assert code == 1 and server.posts == 1, output
    assert "not repeated: the server may be working on it" in output


def test_a_stream_that_never_ends_fails_at_its_deadline(server):
    server.fault = "hang"
    code, output = run(server, "--checks", "burst", "--timeout", "10", "--deadline", "1", "--retries", "0")
    assert code == 1 and "[burst] " in output, output


@pytest.mark.parametrize("fault, check, words", [
    ("http_500", "text_chat", "returned HTTP 500; the server answered: {\"error\": \"CUDA error"),
    ("wrong_model", "models", "served model 'qwen2vl' is not listed (listed: ['someone-else'])"),
    ("empty_content", "text_chat", "the model answered with empty content"),
    # A POST that timed out after it was sent is not sent again (review-serving #9).
    ("hang", "text_chat", "no answer from POST /v1/chat/completions after 1 tries (not repeated: the server may be "
                          "working on it): TimeoutError"),
    ("malformed_json", "text_chat", "did not return JSON; the server answered: {\"choices\": ["),
    ("dropped_stream", "burst", "the stream ended without its final 'data: [DONE]'"),
])
def test_each_fault_fails_with_its_own_message(server, fault, check, words):
    server.fault = fault
    code, output = run(server, "--checks", check)
    assert code == 1
    assert f"[{check}] " in output and words in output, output
    assert f"smoke failed: {check}" in output


def test_wrong_api_key_is_reported_with_the_answer(server, monkeypatch):
    monkeypatch.setenv("SMOKE_KEY", "wrong")
    code, output = run(server, "--checks", "models")
    assert code == 1 and "HTTP 401" in output and "Unauthorized" in output


def test_bad_arguments_exit_2(server):
    assert run(server, "--checks", "models,nope")[0] == 2
    assert smoke.main(["--base-url", "ftp://x", "--model", "m"], printer=lambda *_: None) == 2


def test_wait_ready_is_bounded(monkeypatch):
    monkeypatch.setenv("SMOKE_KEY", "k")
    lines = []
    code = smoke.main(["--base-url", "http://127.0.0.1:9", "--model", "m", "--wait-ready", "1",
                       "--timeout", "0.2", "--retries", "0"], printer=lines.append)
    assert code == 1 and "not ready after 1 s: GET /v1/models did not list 'm'" in lines[-1]


def test_percentiles():
    assert smoke.percentile([3, 1, 2, 4, 5], 0.5) == 3
    assert smoke.percentile([1.0] * 18 + [10.0, 10.0], 0.95) == 10.0
    assert smoke.percentile([1.0] * 19 + [10.0], 0.95) == 1.0  # nearest rank: 1 of 20 is above p95
    assert smoke.percentile([], 0.5) == 0.0


class FakeKubernetesApi:
    """Just enough of the ConfigMap API to check what the smoke Job writes, and with which token."""

    def __init__(self, token: str):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import threading

        self.configmaps, self.calls = {}, []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def handle_write(self):
                api.calls.append((self.command, self.path))
                if self.headers.get("Authorization") != f"Bearer {token}":
                    return self.answer(401, {"message": "Unauthorized"})
                obj = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                if self.command == "POST" and key in api.configmaps:
                    return self.answer(409, {"reason": "AlreadyExists"})
                api.configmaps[key] = obj
                return self.answer(201 if self.command == "POST" else 200, obj)

            do_POST = do_PUT = handle_write

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


def test_report_is_stored_in_a_configmap_then_replaced(tmp_path):
    token = tmp_path / "token"
    token.write_text("sa-token\n")
    api = FakeKubernetesApi("sa-token")
    try:
        smoke.write_report_configmap("qwen2vl/qwen2vl-smoke-report", {"ok": True}, api.url, str(token), None)
        smoke.write_report_configmap("qwen2vl/qwen2vl-smoke-report", {"ok": False}, api.url, str(token), None)
    finally:
        api.httpd.shutdown()
    stored = api.configmaps[("qwen2vl", "qwen2vl-smoke-report")]
    assert json.loads(stored["data"]["report.json"]) == {"ok": False}
    assert api.calls == [("POST", "/api/v1/namespaces/qwen2vl/configmaps"),
                         ("POST", "/api/v1/namespaces/qwen2vl/configmaps"),
                         ("PUT", "/api/v1/namespaces/qwen2vl/configmaps/qwen2vl-smoke-report")]


def test_report_write_refused_by_the_api_is_a_named_failure(tmp_path):
    token = tmp_path / "token"
    token.write_text("wrong")
    api = FakeKubernetesApi("sa-token")
    try:
        with pytest.raises(smoke.SmokeFailure, match=r"\[report\] POST .* returned HTTP 401"):
            smoke.write_report_configmap("qwen2vl/r", {"ok": True}, api.url, str(token), None)
    finally:
        api.httpd.shutdown()
