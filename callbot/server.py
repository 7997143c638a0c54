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
from types import FrameType

import uvicorn
from starlette.applications import Starlette

log = logging.getLogger(__name__)


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
