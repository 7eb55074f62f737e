"""Who may call which path of the endpoint: the API key, checked by the ingress for every path but one.

vLLM 0.6.3 checks its key only for paths under /v1 (vllm/entrypoints/openai/api_server.py:438-450: "if not
request.url.path.startswith(f"{root_path}/v1"): return await call_next(request)"), so /tokenize,
/detokenize, /version and /metrics would answer anyone, and /tokenize accepts chat messages whose image
URLs vLLM then fetches (serving_tokenization.py:76-79). The ingress therefore checks the key itself,
before forwarding, for every method and path except the probes' GET /health.
"""

from __future__ import annotations

import hmac
from pathlib import Path

# The one path that answers without the key: Kubernetes probes and load balancers call it.
OPEN_PATHS = {("GET", "/health")}


def requires_key(method: str, path: str) -> bool:
    return (method.upper(), "/" + path.lstrip("/")) not in OPEN_PATHS


def authorised(authorization: str | None, key: str) -> bool:
    """Whether an Authorization header carries `key` as a bearer token (constant-time comparison)."""
    if authorization is None:
        return False
    return hmac.compare_digest(authorization.encode(), f"Bearer {key}".encode())


def read_key(key_file: str | None) -> str | None:
    """The API key from its file (the same file the vLLM child's VLLM_API_KEY comes from)."""
    return Path(key_file).read_text().strip() if key_file else None
