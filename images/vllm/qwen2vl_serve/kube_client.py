"""The pod's own client of the Kubernetes API, standard library only: the service-account token and CA
that every pod gets mounted, JSON in and out. The smoke Job's init container reads through it
(active_cluster.py) and the smoke Job stores its report through it (smoke.py)."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def in_cluster_url() -> str:
    """The API server's address as the kubelet gives it to every pod."""
    return f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}"


class KubeApi:
    """Requests to the API server with a bearer token."""

    def __init__(self, api_url: str, token: str, ca_path: str | None, timeout_s: float = 30.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.context = ssl.create_default_context(cafile=ca_path) if api_url.startswith("https") else None
        self.timeout_s = timeout_s

    @classmethod
    def from_files(cls, api_url: str | None = None, token_path: str = f"{SERVICE_ACCOUNT}/token",
                   ca_path: str | None = f"{SERVICE_ACCOUNT}/ca.crt", timeout_s: float = 30.0) -> "KubeApi":
        with open(token_path) as handle:
            token = handle.read().strip()
        return cls(api_url or in_cluster_url(), token, ca_path, timeout_s)

    def _request(self, method: str, path: str, body: dict | None) -> urllib.request.Request:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        return urllib.request.Request(self.api_url + path, data=data, headers=headers, method=method)

    def get(self, path: str) -> dict:
        """The object at `path`; an HTTP error status raises urllib.error.HTTPError."""
        with urllib.request.urlopen(self._request("GET", path, None), timeout=self.timeout_s,
                                    context=self.context) as response:
            return json.load(response)

    def send(self, method: str, path: str, body: dict) -> tuple[int, str]:
        """(HTTP status, answer text) of a write; error statuses are returned, not raised."""
        try:
            with urllib.request.urlopen(self._request(method, path, body), timeout=self.timeout_s,
                                        context=self.context) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")
