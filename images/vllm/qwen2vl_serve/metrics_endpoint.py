"""vLLM's Prometheus metrics on a port of their own: GET /metrics on 0.0.0.0:<metrics_port>, proxied from
the vLLM child's /metrics, and nothing else on that port. It needs no key, so it is not the public
endpoint (which checks the key for /metrics like for every other path: access.py); Prometheus scrapes
the pod's `vllm-metrics` port.

A replica that replaces another one in the same pod may start while the old one still holds the port
(Serve stops the old replica gracefully, up to graceful_shutdown_timeout_s): binding is retried until a
deadline, and logged.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time

import aiohttp
from aiohttp import web

logger = logging.getLogger("ray.serve")
BIND_DEADLINE_S = 300.0  # well past Serve's graceful shutdown of the replica that held the port
BIND_RETRY_S = 1.0
SCRAPE_TIMEOUT_S = 10.0


class MetricsEndpoint:
    def __init__(self, port: int, upstream: str, host: str = "0.0.0.0") -> None:
        self.port, self.upstream, self.host = port, upstream, host
        self.runner: web.AppRunner | None = None
        self.task: asyncio.Task | None = None
        self.bound = False
        self.port_was_held = False

    def begin(self) -> None:
        """Starts serving in the background (binding may wait for the port: see start)."""
        self.task = asyncio.get_running_loop().create_task(self.start())

    async def metrics(self, _request: web.Request) -> web.Response:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)) as session:
                async with session.get(f"{self.upstream}/metrics") as answer:
                    body = await answer.read()
                    return web.Response(body=body, status=answer.status,
                                        headers={"Content-Type": answer.headers.get("Content-Type", "text/plain")})
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            return web.Response(status=503, text=f"vLLM's metrics are not available (yet): {error}\n")

    async def start(self, deadline_s: float = BIND_DEADLINE_S) -> bool:
        """Serves until stop(); True once bound, False when the port stayed taken until the deadline."""
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        give_up = time.monotonic() + deadline_s
        while True:
            try:
                await web.TCPSite(self.runner, self.host, self.port).start()
                self.bound = True
                logger.info("serving vLLM's metrics on %s:%s/metrics", self.host, self.port)
                return True
            except OSError as error:
                if error.errno != errno.EADDRINUSE or time.monotonic() >= give_up:
                    logger.error("cannot serve metrics on port %s: %s (gave up)", self.port, error)
                    return False
                if not self.port_was_held:
                    logger.warning("metrics port %s is still held (a previous replica stopping?); retrying "
                                   "for up to %.0f s", self.port, give_up - time.monotonic())
                    self.port_was_held = True
                await asyncio.sleep(BIND_RETRY_S)

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.runner is not None:
            await self.runner.cleanup()
