"""uvicorn with a graceful drain on SIGTERM.

The first SIGTERM drains: `/readyz` turns 503, new calls are rejected, live calls continue for up to
`CALLBOT_DRAIN_SECONDS` and then get a goodbye and a hang-up; only then does the server stop. The HTTP listener stays
up meanwhile, because live calls still receive ACS callbacks. A second signal (or SIGINT) stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette

if TYPE_CHECKING:
    from callbot.config import Settings
    from callbot.services import Services

log = logging.getLogger(__name__)

WS_MAX_BYTES = 2 * 1024 * 1024  # uvicorn's ws_max_size: larger media messages close the socket (1009)
# Idle HTTP keep-alive connections are closed after this. Longer than the clients' own idle timeouts (aiohttp 15 s,
# azure-core's pools, an ingress's upstream pool): uvicorn's default 5 s closes connections a client is about to reuse,
# and a request written into that closing connection is reset (seen as ConnectionResetError under load).
KEEP_ALIVE_S = 75


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None
        self.drain_task: asyncio.Task[None] | None = None
        self.drain_requested = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        services = getattr(self.app.state, "services", None)
        if sig != signal.SIGTERM or self.drain_requested or services is None or self.loop is None:
            super().handle_exit(sig, frame)
            return
        self.drain_requested = True
        log.warning("SIGTERM: draining before shutdown")
        self.loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self.drain_task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        services = self.app.state.services
        try:
            await services.drain(services.settings.callbot_drain_seconds)
        finally:
            self.should_exit = True


@dataclass
class InProcess:
    url: str
    settings: Settings
    app: Starlette
    server: uvicorn.Server

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services


@asynccontextmanager
async def serve_in_process(make_settings: Callable[[int], Settings]) -> AsyncIterator[InProcess]:
    """callbot's app under uvicorn on a free loopback port, in this event loop (the demo and the tests).
    `make_settings(port)` builds the settings once the port is known (the public URL needs it)."""
    from callbot.app import create_app

    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without it every
    # small response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = make_settings(port)
    app = create_app(settings)
    config = uvicorn.Config(app, log_config=None, ws_max_size=WS_MAX_BYTES, lifespan="on", access_log=False,
                            timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("callbot exited during start-up")
            await asyncio.sleep(0.01)
        yield InProcess(f"http://127.0.0.1:{port}", settings, app, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


class NotReady(RuntimeError):
    """A `callbot serve` subprocess exited during start-up or did not become ready in time."""


async def wait_until_ready(url: str, proc: asyncio.subprocess.Process, timeout_s: float = 30.0) -> None:
    """Poll `url`/readyz until it answers 200 (the bench and the tests start `callbot serve` subprocesses)."""
    import aiohttp

    deadline = asyncio.get_running_loop().time() + timeout_s
    async with aiohttp.ClientSession() as http:
        while asyncio.get_running_loop().time() < deadline:
            if proc.returncode is not None:
                raise NotReady(f"callbot serve exited with code {proc.returncode} during start-up")
            try:
                async with http.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise NotReady(f"callbot serve was not ready within {timeout_s:.0f} s")
