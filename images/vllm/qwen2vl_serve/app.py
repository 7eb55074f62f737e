"""The Ray Serve application: one replica owns the node's GPUs and runs vLLM's OpenAI server as a
child process; the replica's HTTP ingress forwards every request to it, streaming the answer back.

RayService's serveConfigV2 points at `qwen2vl_serve.app:build_app` with the server args.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from qwen2vl_serve.server import ServerArgs, ServerStartError, VllmProcess

logger = logging.getLogger("ray.serve")
ingress = FastAPI(title="qwen2vl")
# Hop-by-hop headers belong to one connection, not to the forwarded request.
HOP_HEADERS = {"host", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "content-length"}
REQUEST_TIMEOUT_S = 1800


@serve.deployment(name="VLLMServer")
@serve.ingress(ingress)
class VLLMServer:
    async def __init__(self, args: ServerArgs) -> None:
        log_dir = Path(tempfile.mkdtemp(prefix="vllm-"))
        self.server = VllmProcess(args, log_dir / "vllm.log")
        self.server.start()
        logger.info("started vLLM (pid %s) on port %s; waiting for /health", self.server.process.pid, self.server.port)
        # Waiting here, not in check_health: Serve restarts a replica whose health check fails,
        # and a 72B model needs many minutes before vLLM answers.
        ready_after = await asyncio.to_thread(self.server.wait_ready)
        logger.info("vLLM ready after %.0f s", ready_after)
        self.session = aiohttp.ClientSession(
            self.server.base_url, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        )

    async def check_health(self) -> None:
        if self.server.process.poll() is not None:
            raise ServerStartError(f"vLLM exited with code {self.server.process.returncode}:\n{self.server.log_tail()}")
        if not await asyncio.to_thread(self.server.healthy):
            raise ServerStartError("vLLM's /health does not answer")

    @ingress.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"])
    async def forward(self, path: str, request: Request):
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        body = await request.body()
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
        await self.session.close()
        self.server.stop()


def build_app(args: dict[str, Any]) -> serve.Application:
    """Serve application builder (serveConfigV2 import_path): `args` are ServerArgs fields."""
    return VLLMServer.bind(ServerArgs.from_mapping(args))
