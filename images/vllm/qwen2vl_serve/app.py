"""The Ray Serve application: one replica owns the node's GPUs and runs vLLM's OpenAI server as a child
process; the replica's HTTP ingress checks the API key, fits images to the model's limit, and forwards
the request to vLLM, streaming the answer back.

RayService's serveConfigV2 points at `qwen2vl_serve.app:build_app` with the server args. docs/serving.md
describes the auth boundary, logs, the process lifecycle and the image limits.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from qwen2vl_serve.access import authorised, read_key, requires_key
from qwen2vl_serve.drain import draining
from qwen2vl_serve.metrics_endpoint import MetricsEndpoint
from qwen2vl_serve.request_guard import GuardLimits, RequestRefused, read_body, screen_body
from qwen2vl_serve.server import ServerArgs, ServerStartError, VllmProcess, pinned_source

logger = logging.getLogger("ray.serve")
# Hop-by-hop headers belong to one connection, not to the forwarded request.
HOP_HEADERS = {"host", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "content-length"}
REQUEST_TIMEOUT_S = 1800
# Bodies parsed and images decoded at once (each a worker thread): bounds the memory that large images can
# take, whatever the number of requests in flight (max_ongoing_requests).
SCREENING_SLOTS = 4


# A plain deployment, not @serve.ingress(FastAPI()): under Ray 2.38.0 the ingress wrapper calls the class's
# __init__ without awaiting it (ray/serve/api.py:216-219, `cls.__init__(self, *args, **kwargs)` in a
# synchronous __init__), so an async constructor never runs; and it cloudpickles the FastAPI app
# (api.py:205-214), which fails for fastapi >= 0.140. For a plain class Ray 2.38.0 awaits an async __init__
# (serve/_private/replica.py:884-911, `await self._call_func_or_gen(self._callable.__init__, ...)`), hands
# __call__ a starlette Request for each HTTP request (replica.py:1001-1004, ASGIArgs.to_starlette_request
# in serve/_private/http_util.py:35), and sends a returned starlette Response, streaming ones included, over
# ASGI as it is (replica.py:850-865, 1061-1064). The request's receive channel reports the client's
# disconnect (http_util.py:283-301), which ends a StreamingResponse and with it the upstream request.
@serve.deployment(name="VLLMServer")
class VLLMServer:
    async def __init__(self, args: ServerArgs) -> None:
        # Ray 2.38 may call __del__ while this constructor is still awaiting (serve/_private/replica.py:731-748,
        # 884-911): every attribute __del__ reads is set before the first await, and nothing starts after
        # __del__ has run.
        self.stopping = False
        self.server: VllmProcess | None = None
        self.metrics: MetricsEndpoint | None = None
        self.session: aiohttp.ClientSession | None = None
        if draining():
            # Serve placed this replica on a pod that Kubernetes is deleting (drain.py): it could not finish
            # loading before the pod goes, so fail now and let Serve place it elsewhere.
            raise ServerStartError("this pod is being deleted; the replica starts elsewhere")
        self.key = read_key(args.api_key_file)
        self.limits = GuardLimits(max_request_bytes=args.max_request_bytes, max_image_pixels=args.max_image_pixels)
        self.screening = asyncio.Semaphore(SCREENING_SLOTS)
        if self.key is None:
            logger.warning("no api_key_file: every path of this endpoint answers without a key")
        args = await asyncio.to_thread(pinned_source, args)
        if self.stopping:
            raise ServerStartError("the replica was stopped while the model downloaded")
        self.server = VllmProcess(args)
        self.server.start()
        logger.info("started vLLM (group leader pid %s) on port %s; waiting for /health",
                    self.server.process.pid, self.server.port)
        if args.metrics_port is not None:
            self.metrics = MetricsEndpoint(args.metrics_port, self.server.base_url)
            self.metrics.begin()
        # Waiting here, not in check_health: Serve health-checks a replica only after its constructor
        # returned, and a 72B model needs many minutes before vLLM answers.
        ready_after = await asyncio.to_thread(self.server.wait_ready)
        logger.info("vLLM ready after %.0f s", ready_after)
        self.session = aiohttp.ClientSession(
            self.server.base_url, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        )

    async def check_health(self) -> None:
        # A failure here, REPLICA_HEALTH_CHECK_UNHEALTHY_THRESHOLD (3) times in a row, makes Serve stop this
        # replica and start another (Ray 2.38 serve/_private/deployment_state.py:821-860, constants.py:137).
        # The pod's preStop hook (drain.py) uses exactly that to move the replica off a pod being deleted:
        # Serve stops an unhealthy replica gracefully, draining its requests (deployment_state.py:2080-2107).
        if draining():
            raise ServerStartError("this pod is being deleted: Serve drains this replica and starts one elsewhere")
        if self.server.exited():
            raise ServerStartError(f"vLLM exited with code {self.server.process.returncode}:\n{self.server.log_tail()}")
        if not await asyncio.to_thread(self.server.healthy):
            raise ServerStartError("vLLM's /health does not answer")

    async def __call__(self, request: Request):
        path = request.url.path.lstrip("/")
        if self.key is not None and requires_key(request.method, path) and not authorised(
                request.headers.get("authorization"), self.key):
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        try:
            body = await read_body(request.stream(), request.headers.get("content-length"), self.limits)
            if request.method == "POST" and body:
                async with self.screening:
                    body = await asyncio.to_thread(screen_body, body, self.limits)
        except RequestRefused as refused:
            return JSONResponse(refused.body(), status_code=refused.status)
        try:
            upstream = await self.session.request(
                request.method, f"/{path}", params=request.query_params, headers=headers, data=body
            )
        except aiohttp.ClientError as error:
            return JSONResponse({"error": f"vLLM server unreachable: {error}"}, status_code=502)
        response_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}

        async def relay():
            try:
                async for chunk in upstream.content.iter_any():
                    yield chunk
            finally:
                upstream.release()

        return StreamingResponse(relay(), status_code=upstream.status, headers=response_headers)

    async def __del__(self) -> None:
        # vLLM first, whatever state the constructor reached: it holds the GPUs.
        self.stopping = True
        try:
            if getattr(self, "server", None) is not None:
                await asyncio.to_thread(self.server.stop)
        finally:
            if getattr(self, "metrics", None) is not None:
                await self.metrics.stop()
            if getattr(self, "session", None) is not None:
                await self.session.close()


def build_app(args: dict[str, Any]) -> serve.Application:
    """Serve application builder (serveConfigV2 import_path): `args` are ServerArgs fields."""
    return VLLMServer.bind(ServerArgs.from_mapping(args))
