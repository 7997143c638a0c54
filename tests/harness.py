"""Runs the real callbot app under uvicorn on 127.0.0.1 with settings built for a test."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from callbot.app import create_app
from callbot.cli import WS_MAX_BYTES
from callbot.config import Settings
from callbot.services import Services

WEBHOOK_SECRET = "test-webhook-secret-0123456789"
SIGNING_KEY = "test-signing-key-0123456789abcdef"
VOICELIVE_KEY = "test-voicelive-key-abcdef0123456789"


@dataclass
class Running:
    url: str
    settings: Settings
    server: uvicorn.Server

    @property
    def services(self) -> Services:
        services: Services = self.server.config.app.state.services  # type: ignore[union-attr]
        return services


def make_settings(port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "callbot_public_url": f"http://127.0.0.1:{port}",
        "callbot_webhook_secret": WEBHOOK_SECRET,
        "callbot_signing_key": SIGNING_KEY,
        "azure_voicelive_api_key": VOICELIVE_KEY,
        "callbot_greeting": "",
        "log_level": "DEBUG",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def run_callbot(**overrides: Any) -> AsyncIterator[Running]:
    """Serve callbot with `overrides` (settings field names) on a free port; yields its base URL."""
    # proto IPPROTO_TCP (not 0): asyncio only sets TCP_NODELAY on sockets that say they are TCP; without it every
    # small response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = make_settings(port, **overrides)
    config = uvicorn.Config(create_app(settings), log_config=None, ws_max_size=WS_MAX_BYTES, lifespan="on",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn exited during start-up")
            await asyncio.sleep(0.01)
        yield Running(f"http://127.0.0.1:{port}", settings, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()
