"""The app side of Twilio for the stand-in's own tests: a voice webhook and a Media Streams socket on aiohttp.

It checks the webhook's signature with the twilio package's `RequestValidator` (403 otherwise, as callbot does),
answers the TwiML a test sets, and hands each stream socket to the test (messages in, `send` out).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from twilio.request_validator import RequestValidator


@dataclass
class PeerStream:
    call_id: str
    ws: web.WebSocketResponse
    messages: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def next(self, event: str | None = None, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
        """The next message (of kind ``event``, skipping others when given)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.messages.get()
                if event is None or message.get("event") == event:
                    return message

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send_str(message if isinstance(message, str) else orjson.dumps(message).decode())


@dataclass
class TwilioPeer:
    auth_token: str
    url: str = ""
    twiml: str | None = None  # None: <Connect><Stream> to this peer's socket, with a token parameter
    webhooks: list[tuple[dict[str, str], bool]] = field(default_factory=list)  # (form, signature valid)
    streams: asyncio.Queue[PeerStream] = field(default_factory=asyncio.Queue)
    handshake_headers: list[dict[str, str]] = field(default_factory=list)

    async def voice(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        valid = RequestValidator(self.auth_token).validate(str(request.url), form,
                                                           request.headers.get("X-Twilio-Signature", ""))
        self.webhooks.append((form, bool(valid)))
        if not valid:
            return web.Response(status=403)
        ws_url = self.url.replace("http://", "ws://") + f"/ws/twilio/{form['CallSid']}?dropped=1"
        twiml = self.twiml or (f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{ws_url}">'
                               '<Parameter name="token" value="t0k"/><Parameter name="caller" value="x"/>'
                               "</Stream></Connect></Response>")  # fmt: skip
        return web.Response(text=twiml, content_type="text/xml")

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        self.handshake_headers.append(dict(request.headers))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        peer = PeerStream(request.match_info["call_id"], ws)
        await self.streams.put(peer)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await peer.messages.put(orjson.loads(msg.data))
        peer.closed.set()
        return ws

    async def next_stream(self, timeout: float = 10.0) -> PeerStream:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            return await self.streams.get()


@asynccontextmanager
async def running_peer(auth_token: str) -> AsyncIterator[TwilioPeer]:
    peer = TwilioPeer(auth_token)
    app = web.Application()
    app.router.add_post("/api/twilio/voice", peer.voice)
    app.router.add_get("/ws/twilio/{call_id}", peer.stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    peer.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield peer
    finally:
        await runner.cleanup()
