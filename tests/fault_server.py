"""A small OpenAI-compatible server on 127.0.0.1 that answers well or injects one fault at a time."""

from __future__ import annotations

import base64
import json
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("none", "http_500", "wrong_model", "empty_content", "hang", "malformed_json", "dropped_stream")


def decode_png(data_url: str) -> tuple[int, int]:
    """Width and height of a data-URL PNG, checking its IHDR and IDAT really decode."""
    raw = base64.b64decode(data_url.split(",", 1)[1])
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    idat_start = raw.index(b"IDAT") + 4
    idat_len = int.from_bytes(raw[idat_start - 8:idat_start - 4], "big")
    pixels = zlib.decompress(raw[idat_start:idat_start + idat_len])
    assert len(pixels) == height * (1 + 3 * width)
    return width, height


class FaultServer:
    def __init__(self, model: str = "qwen2vl", api_key: str = "k", hang_s: float = 5.0) -> None:
        self.model, self.api_key, self.fault, self.hang_s = model, api_key, "none", hang_s
        self.requests: list[dict] = []
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
                fault = server.fault
                if fault == "http_500":
                    return self.send(500, b'{"error": "CUDA error: an illegal memory access was encountered"}')
                if fault == "hang":
                    time.sleep(server.hang_s)
                if fault == "malformed_json":
                    return self.send(200, b'{"choices": [')
                content = "" if fault == "empty_content" else "A GPU multiplies matrices quickly."
                for part in body["messages"][0]["content"] if isinstance(body["messages"][0]["content"], list) else []:
                    if part["type"] == "image_url":
                        width, height = decode_png(part["image_url"]["url"])
                        content = content and f"red and blue, {width}x{height}"
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
