"""Smoke checks of a deployed OpenAI-compatible endpoint, standard library only (it runs in the image,
in the smoke Job, and from scripts/smoke.py).

Checks: the model list names the served model; a text chat asks a sum chosen per run and must get it
back; an image chat sends one 1600 x 1200 PNG drawn here (a data URL) whose four quarters each get a colour
drawn per run from six, and asks for each quarter's colour in a request of its own: every answer must name
that colour and no other of the six; a burst of `concurrency` streamed requests all complete, with time
to first token, inter-token latency and tokens per second. Every failure names its check, what was
expected and what the server answered.

The image check cannot pass by chance: the colours are drawn independently and uniformly, so a model that
cannot see answers each question right with probability 1/6 whatever it answers, and passes with
(1/6)^4 = 1/1296, about 0.08 % (tests/test_smoke.py simulates it). The image is larger than the ingress
lets through, so the check also exercises its resize (to 1131 x 849 pixels, 1200 image tokens).

`--no-answer-check` still sends every request and requires content, but does not judge the answers: it
exists only for the random-weight model of the local tests, whose answers are noise by construction.

    python -m qwen2vl_serve.smoke --base-url URL --model qwen2vl [--api-key-file F | --api-key-env VAR]
        [--concurrency 16] [--report out.json] [--wait-ready SECONDS] [--seed N]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import re
import statistics
import struct
import sys
import threading
import time
import urllib.parse
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

from qwen2vl_serve.kube_client import SERVICE_ACCOUNT, KubeApi

CHECKS = ("models", "text_chat", "image_chat", "burst")
# Answers that say "not now" (rate limit, gateway without a backend); a 500 is an answer, not retried.
RETRYABLE_STATUS = {429, 502, 503, 504}
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 40, 220), "yellow": (230, 210, 40),
           "black": (0, 0, 0), "white": (255, 255, 255)}
QUARTERS = ("top-left", "top-right", "bottom-left", "bottom-right")
IMAGE_SIZE = (1600, 1200)


class SmokeFailure(Exception):
    def __init__(self, check: str, problem: str, answer: str = "") -> None:
        self.check = check
        self.problem = problem
        self.answer = answer[:600]
        shown = f"; the server answered: {self.answer}" if self.answer else ""
        super().__init__(f"[{check}] {problem}{shown}")


@dataclass
class CheckResult:
    name: str
    ok: bool
    seconds: float
    detail: str


@dataclass
class StreamTiming:
    ttft_s: float
    inter_token_s: list[float]
    tokens: int
    total_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.total_s if self.total_s > 0 else 0.0


@dataclass
class SmokeReport:
    base_url: str
    model: str
    ok: bool = True
    checks: list[CheckResult] = field(default_factory=list)
    latency: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def png_data_url(quarter_colours: dict[str, str], width: int = IMAGE_SIZE[0], height: int = IMAGE_SIZE[1]) -> str:
    """A real PNG whose quarters (QUARTERS) are filled with the given COLOURS, encoded here: no imaging
    library needed."""
    half_w, half_h = width // 2, height // 2

    def row(left: str, right: str) -> bytes:
        # Filter type none, then the pixels.
        return b"\0" + bytes(COLOURS[left]) * half_w + bytes(COLOURS[right]) * (width - half_w)

    top = row(quarter_colours["top-left"], quarter_colours["top-right"])
    bottom = row(quarter_colours["bottom-left"], quarter_colours["bottom-right"])
    packer = zlib.compressobj(1)  # uniform rows: the fastest level compresses them as well as any
    pixels = b"".join([packer.compress(top) for _ in range(half_h)]
                      + [packer.compress(bottom) for _ in range(height - half_h)] + [packer.flush()])

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode()


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


class Client:
    """Bounded HTTP: every socket operation has `timeout_s`, and every request (retries and a whole stream
    included) ends within `deadline_s`. Retries, with exponential backoff and at most `retries` times, only
    where repeating cannot duplicate work: answers 429/502/503/504, and connection errors before the
    request was sent (refused); a GET also after any connection error. A POST whose connection broke after
    it was sent is not repeated: the server may be generating for it."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float = 120.0, retries: int = 2,
                 backoff_s: float = 0.5, deadline_s: float = 600.0) -> None:
        parsed = urllib.parse.urlsplit(base_url.rstrip("/"))
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"--base-url must be an http(s) URL, got {base_url!r}")
        self.parsed = parsed
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.deadline_s = deadline_s

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.parsed.scheme == "https" else http.client.HTTPConnection
        return cls(self.parsed.hostname, self.parsed.port, timeout=self.timeout_s)

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def open(self, check: str, method: str, path: str, body: dict | None = None, deadline: float | None = None):
        """(connection, response) with status < 400, else SmokeFailure naming `check`."""
        payload = None if body is None else json.dumps(body).encode()
        deadline = time.monotonic() + self.deadline_s if deadline is None else deadline
        for attempt in range(self.retries + 1):
            conn = self._connection()
            sent = False
            try:
                conn.request(method, self.parsed.path + path, body=payload, headers=self._headers())
                sent = True
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as error:
                conn.close()
                repeatable = method == "GET" or not sent or isinstance(error, ConnectionRefusedError)
                if attempt == self.retries or not repeatable:
                    why = "" if repeatable else " (not repeated: the server may be working on it)"
                    raise SmokeFailure(check, f"no answer from {method} {path} after {attempt + 1} tries{why}: "
                                              f"{type(error).__name__}: {error}") from None
            else:
                if response.status < 400:
                    return conn, response
                answer = response.read().decode(errors="replace")
                conn.close()
                if response.status not in RETRYABLE_STATUS or attempt == self.retries:
                    raise SmokeFailure(check, f"{method} {path} returned HTTP {response.status}", answer)
            pause = self.backoff_s * 2 ** attempt
            if time.monotonic() + pause >= deadline:
                raise SmokeFailure(check, f"{method} {path} did not succeed within its {self.deadline_s:.0f} s "
                                          f"deadline ({attempt + 1} tries)")
            time.sleep(pause)
        raise AssertionError("unreachable")

    def json(self, check: str, method: str, path: str, body: dict | None = None) -> dict:
        conn, response = self.open(check, method, path, body)
        try:
            text = response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as error:
            raise SmokeFailure(check, f"the answer to {method} {path} broke off: {error}") from None
        finally:
            conn.close()
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise SmokeFailure(check, f"{method} {path} did not return JSON", text) from None

    def stream(self, check: str, body: dict) -> Iterator[tuple[float, dict]]:
        """(arrival time, event) for each server-sent event of a streamed chat completion."""
        # The socket timeout bounds each read; the deadline bounds a stream that keeps trickling and never ends.
        deadline = time.monotonic() + self.deadline_s
        conn, response = self.open(check, "POST", "/v1/chat/completions", body, deadline)
        done = False
        try:
            while True:
                if time.monotonic() > deadline:
                    raise SmokeFailure(check, f"the stream did not end within {self.deadline_s:.0f} s "
                                              "(waited for its final 'data: [DONE]')")
                try:
                    line = response.readline()
                except (OSError, http.client.HTTPException) as error:
                    raise SmokeFailure(check, f"the stream broke off: {type(error).__name__}: {error}") from None
                if not line:
                    break
                text = line.decode(errors="replace").strip()
                if not text.startswith("data:"):
                    continue
                data = text[len("data:"):].strip()
                if data == "[DONE]":
                    done = True
                    break
                try:
                    yield time.monotonic(), json.loads(data)
                except json.JSONDecodeError:
                    raise SmokeFailure(check, "a stream event is not JSON", data) from None
        finally:
            conn.close()
        if not done:
            raise SmokeFailure(check, "the stream ended without its final 'data: [DONE]'")


def _content(check: str, answer: dict) -> str:
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise SmokeFailure(check, "the answer has no choices[0].message.content", json.dumps(answer)) from None
    if not content or not content.strip():
        raise SmokeFailure(check, "the model answered with empty content", json.dumps(answer))
    return content


def names(answer: str, word: str) -> bool:
    """Whether `answer` contains `word` as a word of its own (case-insensitive)."""
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", answer, re.IGNORECASE) is not None


class Smoke:
    def __init__(self, client: Client, model: str, concurrency: int = 16, max_tokens: int = 32,
                 extra_fields: dict | None = None, require_content: bool = True, check_answers: bool = True,
                 seed: int | None = None) -> None:
        self.client = client
        self.model = model
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        # Extra request fields, for example vLLM's ignore_eos for a fixed-length benchmark.
        self.extra_fields = dict(extra_fields or {})
        # A benchmark of random weights may stream tokens that decode to nothing; a smoke check may not.
        self.require_content = require_content
        # Off only for a random-weight test model (see the module docstring).
        self.check_answers = check_answers
        # The questions change per run, so a canned answer cannot pass; --seed repeats a run.
        self.rng = random.Random(seed)

    def wait_ready(self, seconds: float, poll_s: float = 5.0) -> None:
        deadline = time.monotonic() + seconds
        last = ""
        while time.monotonic() < deadline:
            try:
                self.check_models()
                return
            except SmokeFailure as failure:
                last = str(failure)
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        raise SmokeFailure("wait_ready", f"the endpoint was not ready after {seconds:.0f} s: GET /v1/models did "
                                         f"not list {self.model!r} (last: {last})")

    def check_models(self) -> str:
        answer = self.client.json("models", "GET", "/v1/models")
        names = [m.get("id") for m in answer.get("data", []) if isinstance(m, dict)] if isinstance(answer, dict) else []
        if self.model not in names:
            raise SmokeFailure("models", f"the served model {self.model!r} is not listed (listed: {names})",
                               json.dumps(answer))
        return f"lists {self.model}"

    def _chat(self, content, **extra) -> dict:
        return {"model": self.model, "messages": [{"role": "user", "content": content}],
                "max_tokens": self.max_tokens, "temperature": 0.7, **self.extra_fields, **extra}

    def _judged(self, check: str, content: str, expected: str) -> str:
        if not self.check_answers:
            return f"{len(content)} characters; answer not checked (--no-answer-check), expected {expected!r}"
        if not names(content, expected):
            raise SmokeFailure(check, f"expected an answer naming {expected!r}, got {content.strip()[:200]!r}")
        return f"answered {expected!r}"

    def check_text_chat(self) -> str:
        a, b = self.rng.randint(12, 89), self.rng.randint(12, 89)
        question = f"What is {a} + {b}? Answer with the number only."
        answer = self.client.json("text_chat", "POST", "/v1/chat/completions", self._chat(question, temperature=0))
        return self._judged("text_chat", _content("text_chat", answer), str(a + b))

    def check_image_chat(self) -> str:
        colours = {quarter: self.rng.choice(sorted(COLOURS)) for quarter in QUARTERS}
        image = {"type": "image_url", "image_url": {"url": png_data_url(colours)}}
        options = ", ".join(sorted(COLOURS))
        judged = []
        for quarter in QUARTERS:
            question = (f"What colour is the {quarter} quarter of this image? Answer with one word, one of: "
                        f"{options}.")
            answer = self.client.json("image_chat", "POST", "/v1/chat/completions",
                                      self._chat([{"type": "text", "text": question}, image], temperature=0))
            content = _content("image_chat", answer)
            named = [colour for colour in COLOURS if names(content, colour)]
            if self.check_answers and named != [colours[quarter]]:
                raise SmokeFailure("image_chat", f"expected an answer naming {colours[quarter]!r} (and no other "
                                                 f"colour) for the {quarter} quarter, got {content.strip()[:200]!r}")
            judged.append(f"{quarter} {colours[quarter]}")
        if not self.check_answers:
            return f"{len(QUARTERS)} answers; answer not checked (--no-answer-check), expected {', '.join(judged)!r}"
        return f"answered {', '.join(judged)}"

    def streamed_request(self, index: int) -> StreamTiming:
        body = self._chat(f"Request {index}: list three parts of a computer.", stream=True,
                          stream_options={"include_usage": True})
        start = time.monotonic()
        arrivals, usage_tokens, text = [], None, ""
        for arrived, event in self.client.stream("burst", body):
            if event.get("usage"):
                usage_tokens = event["usage"].get("completion_tokens")
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    arrivals.append(arrived)
                    text += piece
        end = time.monotonic()
        if self.require_content and not text.strip():
            raise SmokeFailure("burst", f"streamed request {index} produced no content")
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
        first = arrivals[0] if arrivals else end
        return StreamTiming(ttft_s=first - start, inter_token_s=gaps,
                            tokens=usage_tokens or len(arrivals), total_s=end - start)

    def load(self, requests: int, concurrency: int, progress: Callable[[int, int], None] | None = None) -> dict:
        """`requests` streamed chat completions, `concurrency` at a time; latency and throughput figures."""
        done = 0
        lock = threading.Lock()

        def one(index: int) -> StreamTiming:
            nonlocal done
            timing = self.streamed_request(index)
            with lock:
                done += 1
                if progress:
                    progress(done, requests)
            return timing

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            timings = list(pool.map(one, range(requests)))
        wall = time.monotonic() - started
        gaps = [gap for t in timings for gap in t.inter_token_s]
        tokens = sum(t.tokens for t in timings)
        return {
            "requests": len(timings),
            "concurrency": concurrency,
            "ttft_p50_s": percentile([t.ttft_s for t in timings], 0.5),
            "ttft_p95_s": percentile([t.ttft_s for t in timings], 0.95),
            "itl_p50_s": percentile(gaps, 0.5),
            "itl_p95_s": percentile(gaps, 0.95),
            "tokens_per_s_per_request_p50": percentile([t.tokens_per_s for t in timings], 0.5),
            "tokens_per_s_per_request_p95": percentile([t.tokens_per_s for t in timings], 0.95),
            "output_tokens": tokens,
            "wall_s": wall,
            "throughput_tokens_per_s": tokens / wall if wall > 0 else 0.0,
            "mean_ttft_s": statistics.fmean(t.ttft_s for t in timings),
        }

    def check_burst(self, progress: Callable[[int, int], None] | None = None) -> tuple[str, dict]:
        latency = self.load(self.concurrency, self.concurrency, progress)
        return (f"{latency['requests']} streams, {latency['output_tokens']} tokens in {latency['wall_s']:.2f} s",
                latency)

    def run(self, checks: tuple[str, ...] = CHECKS, progress=None) -> SmokeReport:
        report = SmokeReport(self.client.parsed.geturl(), self.model)
        for name in checks:
            start = time.monotonic()
            try:
                if name == "burst":
                    detail, report.latency = self.check_burst(progress)
                else:
                    detail = getattr(self, f"check_{name}")()
                report.checks.append(CheckResult(name, True, time.monotonic() - start, detail))
            except SmokeFailure as failure:
                report.ok = False
                report.checks.append(CheckResult(name, False, time.monotonic() - start, str(failure)))
        return report


def write_report_configmap(target: str, report: dict, api_url: str | None = None,
                           token_path: str = f"{SERVICE_ACCOUNT}/token", ca_path: str | None = f"{SERVICE_ACCOUNT}/ca.crt",
                           timeout_s: float = 30.0) -> None:
    """Stores the report as report.json in ConfigMap NAMESPACE/NAME through the Kubernetes API (in-cluster
    service-account credentials), creating it or replacing its data."""
    namespace, _, name = target.partition("/")
    if not namespace or not name:
        raise ValueError(f"--report-configmap must be NAMESPACE/NAME, got {target!r}")
    api = KubeApi.from_files(api_url, token_path, ca_path, timeout_s)
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": {"report.json": json.dumps(report, sort_keys=True)}}
    collection = f"/api/v1/namespaces/{namespace}/configmaps"
    for method, path in (("POST", collection), ("PUT", f"{collection}/{name}")):
        status, answer = api.send(method, path, body)
        if status < 300:
            return
        if not (method == "POST" and status == 409):  # 409: it exists, so replace it
            raise SmokeFailure("report", f"{method} {path} returned HTTP {status}", answer)


def read_api_key(key_file: str | None, key_env: str | None) -> str | None:
    if key_file:
        with open(key_file) as handle:
            return handle.read().strip()
    if key_env:
        value = os.environ.get(key_env)
        if value is None:
            raise ValueError(f"--api-key-env {key_env}: that environment variable is not set")
        return value
    return None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Smoke checks of an OpenAI-compatible endpoint.")
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", required=True, help="the served model name")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key-env", help="environment variable holding the API key")
    key.add_argument("--api-key-file", help="file holding the API key")
    p.add_argument("--concurrency", type=int, default=16, help="streamed requests in the burst (max_num_seqs)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--deadline", type=float, default=600.0, help="seconds per request, retries and stream included")
    p.add_argument("--seed", type=int, help="repeat a run's questions (default: new ones each run)")
    p.add_argument("--no-answer-check", action="store_true",
                   help="do not judge answers: only for a random-weight test model, whose answers are noise")
    p.add_argument("--wait-ready", type=float, default=0.0, help="seconds to wait for /v1/models first")
    p.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    p.add_argument("--report", help="write the JSON report here")
    p.add_argument("--report-configmap", help="also store it in this NAMESPACE/NAME ConfigMap (in-cluster)")
    return p


def checks_from(text: str) -> tuple[str, ...]:
    chosen = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in chosen if c not in CHECKS]
    if unknown or not chosen:
        raise ValueError(f"--checks {text!r}: choose from {', '.join(CHECKS)}")
    return chosen


def format_table(report: SmokeReport) -> str:
    lines = [f"{'check':<12} {'result':<6} {'seconds':>8}  detail"]
    for c in report.checks:
        lines.append(f"{c.name:<12} {'ok' if c.ok else 'FAIL':<6} {c.seconds:>8.2f}  {c.detail}")
    if report.latency:
        lat = report.latency
        lines.append(
            f"burst: TTFT p50 {lat['ttft_p50_s'] * 1000:.0f} ms / p95 {lat['ttft_p95_s'] * 1000:.0f} ms; "
            f"ITL p50 {lat['itl_p50_s'] * 1000:.1f} ms / p95 {lat['itl_p95_s'] * 1000:.1f} ms; "
            f"{lat['throughput_tokens_per_s']:.0f} tokens/s over {lat['requests']} streams"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None, progress=None, printer=print) -> int:
    args = parser().parse_args(argv)
    try:
        client = Client(args.base_url, read_api_key(args.api_key_file, args.api_key_env), args.timeout, args.retries,
                        deadline_s=args.deadline)
        checks = checks_from(args.checks)
    except (ValueError, OSError) as error:
        printer(f"error: {error}")
        return 2
    smoke = Smoke(client, args.model, args.concurrency, args.max_tokens, check_answers=not args.no_answer_check,
                  seed=args.seed)
    if args.wait_ready > 0:
        try:
            smoke.wait_ready(args.wait_ready)
        except SmokeFailure as failure:
            printer(f"smoke failed: {failure}")
            return 1
    report = smoke.run(checks, progress)
    printer(format_table(report))
    if args.report:
        with open(args.report, "w") as handle:
            json.dump(report.as_dict(), handle, indent=2)
    if args.report_configmap:
        try:
            write_report_configmap(args.report_configmap, report.as_dict())
        except (SmokeFailure, OSError, KeyError, ValueError) as error:
            printer(f"could not store the report in {args.report_configmap}: {error}")
            return 1
    failed = [c.name for c in report.checks if not c.ok]
    if failed:
        printer(f"smoke failed: {', '.join(failed)}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
