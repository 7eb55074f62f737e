"""A small OpenAI-compatible server on 127.0.0.1 that answers well or injects one fault at a time.

Answering well means answering right: it works out the sum a text chat asks for, and decodes the PNG an
image chat sends to name the colour of the quarter asked about, so the smoke client's answer checks meet a
real judge."""

from __future__ import annotations

import base64
import collections
import json
import re
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("none", "http_500", "wrong_model", "empty_content", "hang", "malformed_json", "dropped_stream",
          "wrong_answer", "flaky_503", "drop_after_request")
# Reference colours for naming a pixel (the nearest one wins).
NAMED_COLOURS = {"red": (255, 0, 0), "green": (0, 160, 0), "blue": (0, 0, 255), "yellow": (255, 230, 0),
                 "white": (255, 255, 255), "black": (0, 0, 0)}
SUM_QUESTION = re.compile(r"What is (\d+) \+ (\d+)\?")
QUARTER_QUESTION = re.compile(r"the (top|bottom)-(left|right) quarter")


def decode_png(data_url: str) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of a data-URL PNG (8-bit RGB, filter 0), checking it really decodes."""
    raw = base64.b64decode(data_url.split(",", 1)[1])
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    idat_start = raw.index(b"IDAT") + 4
    idat_len = int.from_bytes(raw[idat_start - 8:idat_start - 4], "big")
    pixels = zlib.decompress(raw[idat_start:idat_start + idat_len])
    stride = 1 + 3 * width
    assert len(pixels) == height * stride
    return width, height, [pixels[y * stride + 1:(y + 1) * stride] for y in range(height)]


def colour_at(data_url: str, x_share: float, y_share: float) -> str:
    """The name of the colour nearest to a data-URL PNG's pixel at (x_share, y_share) of its width and height."""
    width, height, rows = decode_png(data_url)
    x, y = int(x_share * width), int(y_share * height)
    pixel = rows[y][3 * x:3 * x + 3]
    return min(NAMED_COLOURS, key=lambda n: sum((a - b) ** 2 for a, b in zip(pixel, NAMED_COLOURS[n])))


def quarter_colour(data_url: str, quarter: str) -> str:
    """The colour of a quarter (top-left, ...) of a data-URL PNG, read at the quarter's centre."""
    vertical, horizontal = quarter.split("-")
    return colour_at(data_url, 0.25 if horizontal == "left" else 0.75, 0.25 if vertical == "top" else 0.75)


def right_answer(content) -> str:
    """What a good model answers to the smoke client's questions."""
    if isinstance(content, list):
        question = " ".join(part.get("text", "") for part in content if part["type"] == "text")
        for part in content:
            if part["type"] == "image_url":
                asked = QUARTER_QUESTION.search(question)
                return quarter_colour(part["image_url"]["url"], f"{asked.group(1)}-{asked.group(2)}").capitalize() + "."
        content = question
    asked = SUM_QUESTION.search(content)
    if asked:
        return str(int(asked.group(1)) + int(asked.group(2)))
    return "A GPU multiplies matrices quickly."


def wrong_answer(content) -> str:
    answer = right_answer(content)
    if answer.isdigit():
        return str(int(answer) + 1)
    if answer.rstrip(".").lower() in NAMED_COLOURS:
        return "Purple."
    return answer


class FaultServer:
    def __init__(self, model: str = "qwen2vl", api_key: str = "k", hang_s: float = 5.0) -> None:
        self.model, self.api_key, self.fault, self.hang_s = model, api_key, "none", hang_s
        self.requests: list[dict] = []
        self.posts = 0  # POSTs received, answered or not
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def authorised(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    self.send(401, b'{"error": "Unauthorized"}')
                    return False
                return True

            def do_GET(self):
                if not self.authorised():
                    return
                name = "someone-else" if server.fault == "wrong_model" else server.model
                self.send(200, json.dumps({"object": "list", "data": [{"id": name, "object": "model"}]}).encode())

            def do_POST(self):
                if not self.authorised():
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.posts += 1
                fault = server.fault
                if fault == "http_500":
                    return self.send(500, b'{"error": "CUDA error: an illegal memory access was encountered"}')
                if fault == "flaky_503" and server.posts == 1:
                    return self.send(503, b'{"error": "no replica yet"}')
                if fault == "drop_after_request":
                    self.connection.shutdown(2)  # received, then gone: the server may be generating
                    self.close_connection = True
                    return
                if fault == "hang":
                    time.sleep(server.hang_s)
                if fault == "malformed_json":
                    return self.send(200, b'{"choices": [')
                asked = body["messages"][0]["content"]
                content = ("" if fault == "empty_content" else
                           wrong_answer(asked) if fault == "wrong_answer" else right_answer(asked))
                if not body.get("stream"):
                    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
                    return self.send(200, json.dumps(answer).encode())
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                words = content.split() or [""]
                for index, word in enumerate(words):
                    if fault == "dropped_stream" and index == 2:
                        self.wfile.flush()
                        self.connection.shutdown(2)
                        return
                    event = {"choices": [{"index": 0, "delta": {"content": word + " "}}]}
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(0.002)
                usage = {"choices": [], "usage": {"completion_tokens": len(words)}}
                self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "FaultServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
