"""The runner's flow control towards Voice Live, on a real aiohttp socket whose far end stops reading.

Over loopback the kernel buffers megabytes before a socket pushes back, so both ends get small socket buffers and
the server stops reading from its transport: the congestion a slow or stalled service causes, within milliseconds.
The ACS side is a scripted source of caller frames (the real ACS path is covered end to end in the other tests).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from callbot.bridge.runner import CallBridge
from callbot.bridge.wire import OUTBOX_LIMIT
from callbot.config import Settings
from callbot.voicelive.connection import send_now

FRAMES = 1000
SMALL_BUFFER = 65536  # small enough to push back within a few hundred frames, big enough to drain fast


def caller_frame(i: int) -> str:
    data = base64.b64encode(i.to_bytes(2, "little") * 480).decode()  # 20 ms at 24 kHz, carrying its index
    return '{"kind":"AudioData","audioData":{"data":"' + data + '","silent":false}}'


class ScriptedAcs:
    """Caller frames as fast as the bridge takes them, then silence on the line (the socket stays open)."""

    def __init__(self, frames: int) -> None:
        self.frames = frames
        self.sent = 0

    async def receive(self) -> dict[str, Any]:
        await asyncio.sleep(0)
        if self.sent >= self.frames:
            await asyncio.Event().wait()
        self.sent += 1
        return {"type": "websocket.receive", "text": caller_frame(self.sent - 1)}

    async def send_text(self, text: str) -> None:
        pass


class Model:
    """A WebSocket server that can stop reading, and records the appends it got."""

    def __init__(self) -> None:
        self.reading = asyncio.Event()
        self.reading.set()
        self.transport: asyncio.Transport | None = None
        self.appends: list[int] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.transport = request.transport  # type: ignore[assignment]
        assert self.transport is not None
        self.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        async for msg in ws:
            await self.reading.wait()
            event = orjson.loads(msg.data)
            if event["type"] == "input_audio_buffer.append":
                self.appends.append(int.from_bytes(base64.b64decode(event["audio"])[:2], "little"))
        return ws

    def stall(self) -> None:
        self.reading.clear()
        assert self.transport is not None
        self.transport.pause_reading()

    def resume(self) -> None:
        self.reading.set()
        assert self.transport is not None
        self.transport.resume_reading()


class Session:
    """What `receive_event` and `send_event` use of the SDK's connection: its aiohttp socket and `recv_bytes`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._connection = ws
        self._events = [orjson.dumps({"type": "session.updated", "session": {}})]

    async def recv_bytes(self) -> bytes:
        if not self._events:
            await asyncio.Event().wait()
        return self._events.pop(0)

    async def close(self) -> None:
        await self._connection.close()


class Connector:
    def __init__(self, client: aiohttp.ClientSession, url: str) -> None:
        self.client, self.url = client, url

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        ws = await self.client.ws_connect(self.url, max_msg_size=0)
        assert ws._response is not None and ws._response.connection is not None
        transport = ws._response.connection.transport
        assert transport is not None
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        yield Session(ws)


async def until(predicate: Any, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def serve(model: Model) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/", model.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def append(i: int) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": orjson.loads(caller_frame(i))["audioData"]["data"]}


async def test_send_now_writes_while_the_socket_keeps_up_and_declines_once_it_backs_up() -> None:
    model = Model()
    runner, port = await serve(model)
    client = aiohttp.ClientSession()
    try:
        async with Connector(client, f"http://127.0.0.1:{port}/").session() as conn:
            assert all(send_now(conn, append(i)) for i in range(10))
            await until(lambda: model.appends == list(range(10)))
            model.stall()
            accepted = 10
            while accepted < 20_000 and send_now(conn, append(accepted)):
                accepted += 1
            assert accepted < 20_000, "a socket whose far end stopped reading was declined in the end"
            transport = conn._connection._writer.transport
            low = transport.get_write_buffer_limits()[0]
            frame = len(orjson.dumps(append(0))) + 8  # a frame's payload, its header and mask
            assert transport.get_write_buffer_size() <= low + frame, "never written far past the low-water mark"
            model.resume()
            await until(lambda: len(model.appends) == accepted)
            assert model.appends == list(range(accepted)), "what it took arrived once, in order"
            assert send_now(conn, append(accepted)), "and once the socket drained it writes again"
    finally:
        if not model.reading.is_set():
            model.resume()
        await client.close()
        await runner.cleanup()


@contextlib.asynccontextmanager
async def bridge_to(model: Model) -> AsyncIterator[CallBridge]:
    """A running `CallBridge` whose Voice Live is `model`, served over a real socket; stopped on the way out."""
    runner, port = await serve(model)
    settings = Settings(_env_file=None, azure_voicelive_endpoint=f"http://127.0.0.1:{port}",  # type: ignore[call-arg]
                        azure_voicelive_api_key="k" * 32)
    client = aiohttp.ClientSession()
    bridge = CallBridge("c1", settings, Connector(client, f"http://127.0.0.1:{port}/"))
    run = asyncio.create_task(bridge.run())
    try:
        yield bridge
    finally:
        if not model.reading.is_set():
            model.resume()  # else the server's handler would hold up its shutdown
        bridge.stop("test over")
        assert await asyncio.wait_for(run, 5) == "test over"
        await client.close()
        await runner.cleanup()


async def test_caller_audio_goes_straight_to_a_model_socket_that_keeps_up_not_through_the_writer() -> None:
    model = Model()
    queued: list[str] = []
    async with bridge_to(model) as bridge:
        put = bridge.outbox.put
        bridge.outbox.put = lambda event: (queued.append(event["type"]), put(event))[1]  # type: ignore[method-assign]
        await until(lambda: bridge.core.ready and bridge.vl_conn is not None)
        bridge.attach(ScriptedAcs(50))  # type: ignore[arg-type]
        await until(lambda: len(model.appends) == 50)
        assert model.appends == list(range(50))
        assert "session.update" in queued and "input_audio_buffer.append" not in queued, "no caller audio waited"


async def test_a_stalled_voicelive_socket_never_blocks_caller_audio_and_what_reaches_it_stays_in_order() -> None:
    model = Model()
    async with bridge_to(model) as bridge:
        await until(lambda: bridge.core.ready and model.transport is not None)
        model.stall()
        bridge.attach(ScriptedAcs(FRAMES))  # type: ignore[arg-type]
        await until(lambda: bridge.core.stats.caller_frames == FRAMES)
        # the caller's audio was taken in all along; the outbox kept its bound by dropping the oldest audio
        assert bridge.outbox.dropped > 0 and len(bridge.outbox.items) <= OUTBOX_LIMIT
        model.resume()
        await until(lambda: model.appends[-1:] == [FRAMES - 1])
        # everything that was not dropped arrived, once, in the order the caller spoke it
        assert model.appends == sorted(set(model.appends))
        assert len(model.appends) == FRAMES - bridge.outbox.dropped
