"""A stand-in for the one thing the stack asks of the Kubernetes API at run time: the smoke Job creates
or replaces its report ConfigMap with its service-account token (images/vllm/qwen2vl_serve/smoke.py
write_report_configmap). It serves HTTPS with a CA the Job gets at the in-cluster path, checks the bearer
token and the namespace, and keeps what was written. Anything else is 403, as the Job's Role allows
only ConfigMaps.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from infra.rehearsal.manifests import RehearsalError

_CONFIGMAPS = re.compile(r"^/api/v1/namespaces/([^/]+)/configmaps(?:/([^/]+))?$")


def make_certificate(directory: Path, ip: str) -> tuple[Path, Path]:
    """A self-signed certificate for `ip` (the CA the Job trusts is this certificate itself)."""
    cert, key = directory / "ca.crt", directory / "apiserver.key"
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=kube-apiserver",
         "-addext", f"subjectAltName=IP:{ip}", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True)
    if result.returncode != 0:
        raise RehearsalError(f"openssl could not make the API stand-in's certificate: {result.stderr.strip()}")
    return cert, key


class KubeApi:
    def __init__(self, token: str, namespace: str) -> None:
        self.token = token
        self.namespace = namespace
        self.config_maps: dict[str, dict] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.server: ThreadingHTTPServer | None = None

    def serve(self, ip: str, port: int, cert: Path, key: Path) -> None:
        """Binds and serves on a thread; call it from a thread inside the pod network."""
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, status: int, body: dict) -> None:
                api.requests.append((self.command, self.path, status))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _write(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                match = _CONFIGMAPS.match(self.path)
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    return self._answer(401, {"reason": "Unauthorized"})
                if not match or match.group(1) != api.namespace:
                    return self._answer(403, {"reason": "Forbidden"})
                name = match.group(2) or body.get("metadata", {}).get("name")
                if self.command == "POST" and name in api.config_maps:
                    return self._answer(409, {"reason": "AlreadyExists"})
                api.config_maps[name] = body
                self._answer(201 if self.command == "POST" else 200, body)

            do_POST = _write
            do_PUT = _write

            def do_GET(self) -> None:
                self._answer(403, {"reason": "Forbidden"})

        self.server = ThreadingHTTPServer((ip, port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
