"""Twilio's side of a call, small and in-test: the voice webhook signed with the `twilio` package's own
RequestValidator, a Media Streams client that plays bot audio in real time and echoes marks as Twilio does, and a REST
server that checks Twilio's basic auth and records the call updates."""

from __future__ import annotations

import asyncio
import base64
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import orjson
from aiohttp import web
from twilio.request_validator import RequestValidator

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-0123456789abcdef"
CALL_SID = "CA" + "fedcba9876543210" * 2
STREAM_SID = "MZ" + "00112233445566778899aabbccddeeff"
CALLER = "+14255550100"


def twilio_env(rest: TwilioRest | None = None, **extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {"twilio_account_sid": ACCOUNT_SID, "twilio_auth_token": AUTH_TOKEN}
    if rest is not None:
        env["twilio_api_base_url"] = rest.url
    env.update(extra)
    return env


def voice_form(call_sid: str = CALL_SID, **extra: str) -> dict[str, str]:
    form = {"AccountSid": ACCOUNT_SID, "CallSid": call_sid, "From": CALLER, "To": "+14255550199",
            "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}
    form.update(extra)
    return form


async def post_signed(base_url: str, path: str, form: dict[str, str], *, signed_url: str | None = None,
                      token: str = AUTH_TOKEN, signature: str | None = None) -> tuple[int, str]:
    """POST `form` as Twilio does, signed for `signed_url` (default: the URL posted to)."""
    url = base_url + path
    sig = signature if signature is not None else RequestValidator(token).compute_signature(signed_url or url, form)
    headers = {"X-Twilio-Signature": sig} if sig else {}
    async with aiohttp.ClientSession() as http, http.post(url, data=form, headers=headers) as response:
        return response.status, await response.text()


def connect_stream(twiml: str) -> tuple[str, dict[str, str]]:
    """The `<Connect><Stream url>` of a TwiML answer and its `<Parameter>`s."""
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None, twiml
    return stream.attrib["url"], {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}


def start_message(token: str | None, call_sid: str = CALL_SID, encoding: str = "audio/x-mulaw") -> str:
    params = {"token": token} if token is not None else {}
    return orjson.dumps({"event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID, "start": {
        "accountSid": ACCOUNT_SID, "streamSid": STREAM_SID, "callSid": call_sid, "tracks": ["inbound"],
        "mediaFormat": {"encoding": encoding, "sampleRate": 8000, "channels": 1},
        "customParameters": params}}).decode()


CONNECTED = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'


@dataclass
class Stream:
    """Twilio's Media Streams side of one call: sends the caller, plays bot audio at real time after a start delay
    (a jitter buffer), echoes each mark once the audio before it has played, and on `clear` drops what is buffered
    and echoes its marks at once."""

    ws: aiohttp.ClientWebSocketResponse
    start_delay_s: float = 0.3
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    echoed: list[tuple[float, str]] = field(default_factory=list)  # (when, mark name)
    seq: int = 2
    chunk: int = 0

    def __post_init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.play_at: float | None = None
        self.reader = asyncio.create_task(self._read())
        self.player = asyncio.create_task(self._play())

    async def send(self, event: dict[str, Any] | str) -> None:
        await self.ws.send_str(event if isinstance(event, str) else orjson.dumps(event).decode())

    async def media(self, ulaw: bytes) -> None:
        self.chunk += 1
        self.seq += 1
        await self.send({"event": "media", "sequenceNumber": str(self.seq), "streamSid": STREAM_SID,
                         "media": {"track": "inbound", "chunk": str(self.chunk), "timestamp": str(self.chunk * 20),
                                   "payload": base64.b64encode(ulaw).decode()}})

    async def caller(self, ulaw: bytes, frame: int = 160) -> None:
        for i in range(0, len(ulaw), frame):
            await self.media(ulaw[i:i + frame])

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            body = orjson.loads(msg.data)
            self.received.append((time.monotonic(), body))
            if body["event"] == "clear":
                self._clear()
            elif body["event"] == "media":
                self.queue.put_nowait(("media", base64.b64decode(body["media"]["payload"])))
            elif body["event"] == "mark":
                self.queue.put_nowait(("mark", body["mark"]["name"]))

    def _clear(self) -> None:
        pending = []
        while not self.queue.empty():
            kind, value = self.queue.get_nowait()
            if kind == "mark":
                pending.append(value)
        self.play_at = None
        self.queue.put_nowait(("flush", pending))

    async def _echo(self, name: str) -> None:
        self.echoed.append((time.monotonic(), name))
        await self.send({"event": "mark", "sequenceNumber": "0", "streamSid": STREAM_SID, "mark": {"name": name}})

    async def _play(self) -> None:
        while True:
            kind, value = await self.queue.get()
            if kind == "flush":
                for name in value:
                    await self._echo(name)
            elif kind == "media":
                now = time.monotonic()
                if self.play_at is None or self.play_at < now:
                    self.play_at = now + (self.start_delay_s if self.play_at is None else 0.0)
                self.play_at += len(value) / 8000
            elif kind == "mark":
                if self.play_at is not None:
                    await asyncio.sleep(max(0.0, self.play_at - time.monotonic()))
                await self._echo(value)

    def events(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, b) for t, b in self.received if b["event"] == kind]

    def bot_audio(self) -> bytes:
        return b"".join(base64.b64decode(b["media"]["payload"]) for _, b in self.events("media"))

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while len(self.events(kind)) < count:
            assert time.monotonic() < deadline, f"no {kind}: got {[b['event'] for _, b in self.received][-10:]}"
            await asyncio.sleep(0.01)
        return self.events(kind)[count - 1][1]

    async def close(self) -> None:
        self.reader.cancel()
        self.player.cancel()
        await asyncio.gather(self.reader, self.player, return_exceptions=True)


@asynccontextmanager
async def stream(url: str, token: str | None, *, call_sid: str = CALL_SID, start_delay_s: float = 0.3
                 ) -> AsyncIterator[Stream]:
    """Open the stream socket as Twilio does: `connected`, then `start` carrying the token parameter."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(CONNECTED)
        await ws.send_str(start_message(token, call_sid))
        s = Stream(ws, start_delay_s)
        try:
            yield s
        finally:
            await s.close()


async def answered_call(base_url: str, call_sid: str = CALL_SID) -> tuple[str, str]:
    """The voice webhook, signed: the stream URL and token callbot answers with."""
    status, twiml = await post_signed(base_url, "/api/twilio/voice", voice_form(call_sid))
    assert status == 200, twiml
    url, params = connect_stream(twiml)
    return url, params["token"]


class TwilioRest:
    """Twilio's REST API for call updates: checks basic auth (account SID : auth token), records each form."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, dict[str, str]]] = []
        self.unauthorized = 0
        self.fail_with: int | None = None
        self.updated = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        auth = aiohttp.BasicAuth.decode(request.headers.get("Authorization", "Basic Og=="))
        if (auth.login, auth.password) != (ACCOUNT_SID, AUTH_TOKEN) or request.match_info["account"] != ACCOUNT_SID:
            self.unauthorized += 1
            return web.json_response({"code": 20003, "message": "Authenticate", "status": 401}, status=401)
        form = dict(parse_qsl(await request.text()))
        sid = request.match_info["sid"]
        self.updates.append((sid, form))
        self.updated.set()
        if self.fail_with is not None:
            return web.json_response({"code": 21220, "message": "Call is not in-progress", "status": self.fail_with},
                                     status=self.fail_with)
        return web.json_response({"sid": sid, "account_sid": ACCOUNT_SID, "status": form.get("Status", "in-progress")})

    async def wait_update(self, count: int = 1, timeout: float = 10.0) -> tuple[str, dict[str, str]]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while len(self.updates) < count:
                self.updated.clear()
                await self.updated.wait()
        return self.updates[count - 1]


@asynccontextmanager
async def twilio_rest() -> AsyncIterator[TwilioRest]:
    rest = TwilioRest()
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{sid}.json", rest.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rest.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield rest
    finally:
        await runner.cleanup()
