"""The phone network side of a call, for the simulator, the demo and the tests.

`PhoneNetwork` plays Azure Communication Services towards one callbot: the Call Automation REST API (HMAC-checked,
`AcsServer`), ACS's token signer (a local key pair whose JWKS callbot is pointed at) and the media WebSocket client.
`PhoneCall` is one placed call: it streams caller audio as 20 ms frames, the way ACS does, and records what callbot
sends back (audio frames and StopAudio, with arrival times).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from callbot.local.acs_identity import JwksServer, LocalAcsIdentity
from callbot.local.acs_server import AcsServer, AnsweredCall

log = logging.getLogger(__name__)

LOCAL_RESOURCE_ID = "00000000-0000-4000-8000-00000000ca11"
SAMPLE_RATES = {"pcm24KMono": 24000, "pcm16KMono": 16000}


class PhoneError(RuntimeError):
    """The call could not be placed (callbot refused the webhook, never answered, refused the media socket)."""


@dataclass
class Received:
    at: float  # time.monotonic()
    kind: str  # "AudioData" | "StopAudio" | other
    audio: bytes = b""


@dataclass
class PhoneCall:
    network: PhoneNetwork
    answered: AnsweredCall
    ws: aiohttp.ClientWebSocketResponse
    sample_rate: int
    placed_at: float
    answered_at: float
    received: list[Received] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    frames_sent: int = 0
    _reader: asyncio.Task[None] | None = None

    @property
    def frame_bytes(self) -> int:
        return self.sample_rate * 2 // 50

    def start_reading(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = orjson.loads(msg.data)
                kind = data.get("kind") or data.get("Kind") or "?"
                audio = b""
                if kind == "AudioData":
                    audio = base64.b64decode((data.get("audioData") or data.get("AudioData"))["data"])
                self.received.append(Received(time.monotonic(), kind, audio))
                self.changed.set()
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            self.changed.set()

    # -- sending ---------------------------------------------------------------------------------------------

    async def send_frame(self, pcm: bytes, *, silent: bool | None = None) -> None:
        if silent is None:
            silent = not any(pcm)
        await self.ws.send_str(audio_message(pcm, silent=silent))
        self.frames_sent += 1

    async def send_raw(self, text: str | bytes) -> None:
        if isinstance(text, bytes):
            await self.ws.send_bytes(text)
        else:
            await self.ws.send_str(text)

    async def stream(self, pcm: bytes, *, realtime: bool = True) -> None:
        """Send `pcm` as 20 ms frames (the last one zero-padded), paced at real time like ACS."""
        size = self.frame_bytes
        start = time.monotonic()
        for i, offset in enumerate(range(0, len(pcm), size)):
            frame = pcm[offset:offset + size]
            if len(frame) < size:
                frame += bytes(size - len(frame))
            if realtime:
                delay = start + i * 0.02 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.send_frame(frame)

    async def silence(self, seconds: float, *, realtime: bool = True) -> None:
        await self.stream(bytes(self.frame_bytes * max(1, round(seconds * 50))), realtime=realtime)

    # -- what came back --------------------------------------------------------------------------------------

    def bot_audio(self, since: float = 0.0) -> bytes:
        return b"".join(r.audio for r in self.received if r.kind == "AudioData" and r.at >= since)

    def kinds(self) -> list[str]:
        return [r.kind for r in self.received]

    async def wait_until(self, predicate: Any, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not predicate():
                if self.closed.is_set():
                    if predicate():
                        return
                    raise PhoneError("media socket closed while waiting")
                self.changed.clear()
                await self.changed.wait()

    async def wait_for_audio(self, frames: int = 1, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        await self.wait_until(lambda: sum(r.kind == "AudioData" for r in self.received) >= frames, timeout)

    async def wait_for_stop(self, after: float = 0.0, timeout: float = 10.0) -> Received:  # noqa: ASYNC109
        def found() -> bool:
            return any(r.kind == "StopAudio" and r.at >= after for r in self.received)

        await self.wait_until(found, timeout)
        return next(r for r in self.received if r.kind == "StopAudio" and r.at >= after)

    # -- ending ----------------------------------------------------------------------------------------------

    async def hang_up(self) -> None:
        """The caller hangs up: ACS closes the media socket and posts CallDisconnected."""
        await self.ws.close()
        await self.network.callback(self, "CallDisconnected")
        await self.close()

    async def close(self) -> None:
        if not self.ws.closed:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


def audio_message(pcm: bytes, *, silent: bool = False, participant: str = "4:+14255550123") -> str:
    return orjson.dumps({"kind": "AudioData", "audioData": {
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "participantRawID": participant, "data": base64.b64encode(pcm).decode("ascii"), "silent": silent,
    }}).decode()


class PhoneNetwork:
    """ACS for a callbot under test or demo. Start it, give callbot `env()`, then `place_call`."""

    def __init__(self, resource_id: str = LOCAL_RESOURCE_ID) -> None:
        self.resource_id = resource_id
        self.identity: LocalAcsIdentity | None = None
        self.jwks = JwksServer()
        self.acs = AcsServer()
        self.http: aiohttp.ClientSession | None = None
        self.calls: list[PhoneCall] = []

    async def start(self) -> None:
        self.identity = await LocalAcsIdentity.create()
        self.jwks.set_identities([self.identity])
        await self.jwks.start()
        await self.acs.start()
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))

    async def stop(self) -> None:
        for call in self.calls:
            await call.close()
        if self.http is not None:
            await self.http.close()
        await self.acs.stop()
        await self.jwks.stop()

    async def __aenter__(self) -> PhoneNetwork:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def env(self) -> dict[str, str]:
        """The settings callbot needs to trust this network."""
        return {
            "ACS_CONNECTION_STRING": self.acs.connection_string,
            "ACS_RESOURCE_ID": self.resource_id,
            "CALLBOT_ACS_JWKS_URL": self.jwks.url,
        }

    def authorization(self, lifetime_s: float = 300.0) -> str:
        assert self.identity is not None
        return self.identity.authorization(self.resource_id, lifetime_s=lifetime_s)

    async def callback(self, call: PhoneCall, event_type: str, **kwargs: Any) -> int:
        return await self.acs.post_callback(call.answered.callback_uri, event_type,
                                            call.answered.call_connection_id,
                                            authorization=self.authorization(), **kwargs)

    async def post_incoming_call(self, callbot_url: str, secret: str, event: dict[str, Any]) -> int:
        assert self.http is not None
        async with self.http.post(f"{callbot_url}/api/incoming-call", params={"secret": secret},
                                  json=[event]) as response:
            await response.read()
            return response.status

    async def place_call(self, callbot_url: str, secret: str, *, caller: str = "+14255550123",
                         answer_timeout: float = 10.0, connected_event: bool = True) -> PhoneCall:
        """Ring callbot: Event Grid IncomingCall -> wait for its answer -> CallConnected -> open the media socket."""
        assert self.http is not None
        event = self.acs.incoming_call_event(caller)
        context = event["data"]["incomingCallContext"]
        placed = time.monotonic()
        status = await self.post_incoming_call(callbot_url, secret, event)
        if status != 200:
            raise PhoneError(f"callbot answered the IncomingCall webhook with HTTP {status}")
        answered = await self._wait_answered(context, within=answer_timeout)
        answered_at = time.monotonic()
        if connected_event:
            await self.acs.post_callback(answered.callback_uri, "CallConnected", answered.call_connection_id,
                                         authorization=self.authorization())
        transport = answered.transport_url
        if not transport:
            raise PhoneError("callbot answered without a media transport URL")
        rate = SAMPLE_RATES.get(answered.audio_format or "", 24000)
        try:
            ws = await self.http.ws_connect(transport, headers={
                "Authorization": self.authorization(24 * 3600),
                "x-ms-call-connection-id": answered.call_connection_id,
                "x-ms-call-correlation-id": answered.correlation_id,
            })
        except aiohttp.WSServerHandshakeError as exc:
            raise PhoneError(f"callbot refused the media socket (HTTP {exc.status})") from None
        call = PhoneCall(self, answered, ws, rate, placed, answered_at)
        self.calls.append(call)
        call.start_reading()
        await ws.send_str(orjson.dumps({"kind": "AudioMetadata", "audioMetadata": {
            "subscriptionId": answered.call_connection_id, "encoding": "PCM", "sampleRate": rate,
            "channels": 1, "length": rate * 2 // 50}}).decode())
        if connected_event:
            await self.acs.post_callback(answered.callback_uri, "MediaStreamingStarted",
                                         answered.call_connection_id, authorization=self.authorization())
        return call

    async def _wait_answered(self, context: str, *, within: float) -> AnsweredCall:
        deadline = time.monotonic() + within
        while True:
            for call in self.acs.calls.values():
                if call.incoming_call_context == context:
                    return call
            if any(ctx == context for ctx, _ in self.acs.rejected):
                raise PhoneError("callbot rejected the call")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PhoneError(f"callbot did not answer within {within:.0f} s")
            try:
                await self.acs.wait_for("answer", timeout=min(remaining, 0.5))
            except TimeoutError:
                pass
            await asyncio.sleep(0)
