"""The phone network side of a call, for the simulator, the demo and the tests.

`PhoneNetwork` plays Azure Communication Services towards one callbot: the Call Automation REST API (HMAC-checked,
`AcsServer`), ACS's token signer (a local key pair whose JWKS callbot is pointed at) and the media WebSocket client.
`PhoneCall` (a `callbot.local.caller.call.SimulatedCall`) is one placed call: it streams caller audio as 20 ms frames,
as ACS does, and records what callbot sends back (audio frames and StopAudio, with arrival times). Caller audio
goes by `stream` (frames as given, for tests that check bytes) or the line (`start_line` + `say`, key presses by
`press_key`): a frame every 20 ms for the whole call, silence between utterances, as a real phone line. With
`telephone_leg=True` it goes through a `TelephoneLeg` (8 kHz G.711 u-law) before ACS's upsampling.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from callbot.local.acs.identity import JwksServer, LocalAcsIdentity
from callbot.local.acs.request_checks import TransferRequest
from callbot.local.acs.server import AcsServer, AnsweredCall
from callbot.local.caller.line import Utterances
from callbot.local.caller.messages import (
    CALLBOT_HUNG_UP,
    CALLER_HUNG_UP,
    SAMPLE_RATES,
    PhoneError,
    Received,
    Utterance,
    audio_message,
    close_reason,
    dtmf_message,
)
from callbot.local.caller.telephone import TelephoneLeg
from callbot.local.profile import LocalProfile

__all__ = ["SAMPLE_RATES", "PhoneCall", "PhoneError", "PhoneNetwork", "Received", "Utterance", "audio_message"]

log = logging.getLogger(__name__)

LOCAL_RESOURCE_ID = "00000000-0000-4000-8000-00000000ca11"


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
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # media socket closed, or either side hung up
    end_reason: str | None = None  # why, in words (the first cause seen)
    ended_at: float | None = None  # time.monotonic() of the end
    transferred_to: str | None = None  # callbot transferred the call there (ACS accepted it)
    frames_sent: int = 0
    leg: TelephoneLeg | None = None
    connected_at: float = 0.0
    line_started_at: float | None = None
    caller_audio: bytearray = field(default_factory=bytearray)  # the line's frames as ACS delivered them
    _reader: asyncio.Task[None] | None = None
    _line: asyncio.Task[None] | None = None
    _speech: Utterances = field(default_factory=Utterances)

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
                try:
                    data = orjson.loads(msg.data)
                    kind = data.get("kind") or data.get("Kind") or "?"
                    audio = b""
                    if kind == "AudioData":
                        audio = base64.b64decode((data.get("audioData") or data.get("AudioData"))["data"])
                except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
                    log.warning("call %s: malformed message from callbot skipped (%s)",
                                self.answered.call_connection_id, type(exc).__name__)
                    continue
                self.received.append(Received(time.monotonic(), kind, audio))
                self.changed.set()
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            hung_up = self.network.acs.states.get(self.answered.call_connection_id) == "disconnected"
            self.end(CALLBOT_HUNG_UP if hung_up else close_reason(self.close_code))

    def end(self, reason: str) -> None:
        """The call is over (the first reason given is kept)."""
        if self.end_reason is None:
            self.end_reason, self.ended_at = reason, time.monotonic()
        self.ended.set()
        self.changed.set()

    # -- sending ---------------------------------------------------------------------------------------------

    async def send_frame(self, pcm: bytes, *, silent: bool | None = None) -> None:
        if silent is None:
            silent = not any(pcm)
        await self.ws.send_str(audio_message(pcm, silent=silent))
        self.frames_sent += 1

    async def send_raw(self, text: str | bytes) -> None:
        await (self.ws.send_bytes(text) if isinstance(text, bytes) else self.ws.send_str(text))

    async def press_key(self, key: str) -> None:
        """One key press: an ACS ``DtmfData`` media message (`PhoneError` when the socket is gone)."""
        try:
            await self.send_raw(dtmf_message(key))
        except (ConnectionResetError, aiohttp.ClientError) as exc:
            raise PhoneError(f"the media socket is gone ({type(exc).__name__})") from None

    async def stream(self, pcm: bytes, *, realtime: bool = True) -> None:
        """Send `pcm` as 20 ms frames (the last one zero-padded), paced at real time like ACS. Not while the
        line runs (`start_line`)."""
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
            await self.send_frame(self.leg.process(frame) if self.leg is not None else frame)

    # -- the line: continuous 20 ms frames ---------------------------------------------------------------------

    def start_line(self) -> None:
        """Start sending a frame every 20 ms until the call ends: queued utterances (`say`), else silence."""
        if self._line is None:
            self._line = asyncio.create_task(self._run_line())

    async def say(self, pcm: bytes) -> Utterance:
        """Queue `pcm` (mono 16-bit at the media rate) on the line; returns once its last frame has gone out.
        `PhoneError` if the call has ended (or ends first), or if the line does not send it in time."""
        if self._line is None:
            raise RuntimeError("start_line() first")
        if self.ended.is_set() or self._line.done():
            raise PhoneError(f"the call ended before the caller spoke: {self.end_reason or 'the line stopped'}")
        return await self._speech.say(pcm, self.sample_rate, "media")

    async def _run_line(self) -> None:
        size = self.frame_bytes
        start = self.line_started_at = time.monotonic()
        number = 0
        try:
            while not self.closed.is_set():
                delay = start + number * 0.02 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                number += 1
                speech = self._speech.next_frame(size)
                frame = bytes(size) if speech is None else speech + bytes(size - len(speech))
                if self.leg is not None:
                    frame = self.leg.process(frame)
                self.caller_audio += frame
                await self.send_frame(frame)
                self._speech.sent()
        except (aiohttp.ClientError, ConnectionResetError):
            log.debug("media socket gone: the line stops")
        finally:
            self._speech.fail()

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
        """Until `frames` 20 ms frames of bot audio have arrived (an AudioData message may carry several)."""
        size = self.frame_bytes
        await self.wait_until(
            lambda: sum(len(r.audio) for r in self.received if r.kind == "AudioData") >= frames * size, timeout)

    async def wait_for_stop(self, after: float = 0.0, timeout: float = 10.0) -> Received:  # noqa: ASYNC109
        def found() -> bool:
            return any(r.kind == "StopAudio" and r.at >= after for r in self.received)

        await self.wait_until(found, timeout)
        return next(r for r in self.received if r.kind == "StopAudio" and r.at >= after)

    # -- ending ----------------------------------------------------------------------------------------------

    async def hang_up(self) -> None:
        """The caller hangs up: ACS closes the media socket and posts CallDisconnected."""
        self.end(CALLER_HUNG_UP)
        if self._line is not None:
            self._line.cancel()
            await asyncio.gather(self._line, return_exceptions=True)
        await self.ws.close()
        await self.network.callback(self, "CallDisconnected")
        await self.close()

    async def close(self) -> None:
        if self._line is not None:
            self._line.cancel()
            await asyncio.gather(self._line, return_exceptions=True)
        if not self.ws.closed:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


class PhoneNetwork:
    """ACS for a callbot under test or demo. Start it, give callbot `env()`, then `place_call`.

    Defaults: a fresh signing identity and access key, free ports. `from_profile` uses the local development
    profile's (fixed) ones, which `callbot serve` trusts in local mode. `telephone_leg`: caller audio of
    every call goes through a `TelephoneLeg`.
    """

    def __init__(self, resource_id: str = LOCAL_RESOURCE_ID, *, identity: LocalAcsIdentity | None = None,
                 access_key: bytes | str | None = None, host: str = "127.0.0.1", acs_port: int = 0,
                 jwks_port: int = 0, telephone_leg: bool = False) -> None:
        self.resource_id = resource_id
        self.identity: LocalAcsIdentity | None = identity
        self.jwks = JwksServer()
        self.acs = AcsServer(access_key, host=host, port=acs_port)
        self.acs.on_hangup = self._hung_up
        self.acs.on_transferred = self._transferred
        self.acs.authorize = self.authorization  # the stand-in signs the transfer callbacks it sends itself
        self.http: aiohttp.ClientSession | None = None
        self.calls: list[PhoneCall] = []
        self.telephone_leg = telephone_leg
        self._host, self._jwks_port = host, jwks_port

    @classmethod
    def from_profile(cls, profile: LocalProfile, *, resource_id: str | None = None,
                     telephone_leg: bool = True) -> PhoneNetwork:
        """ACS as `callbot serve` in local development mode expects it (blocking: loads the RSA key)."""
        return cls(resource_id or profile.resource_id, identity=profile.identity(),
                   access_key=profile.acs_access_key, host=profile.host, acs_port=profile.acs_port,
                   jwks_port=profile.jwks_port, telephone_leg=telephone_leg)  # fmt: skip

    async def _hung_up(self, answered: AnsweredCall) -> None:
        """callbot hung up (terminate or DELETE at the ACS REST API): that call is over."""
        for call in self.calls:
            if call.answered.call_connection_id == answered.call_connection_id:
                call.end(CALLBOT_HUNG_UP)

    async def _transferred(self, answered: AnsweredCall, request: TransferRequest) -> None:
        """ACS accepted callbot's transfer: the caller now talks to the target, and callbot's media stream ends."""
        for call in self.calls:
            if call.answered.call_connection_id == answered.call_connection_id:
                call.transferred_to = request.target_label
                call.end(f"transferred to {request.target_label}")
                await call.close()

    async def start(self) -> None:
        if self.identity is None:
            self.identity = await LocalAcsIdentity.create()
        self.jwks.set_identities([self.identity])
        try:
            await self.jwks.start(self._host, self._jwks_port)
            await self.acs.start()
        except OSError as exc:
            await self.jwks.stop()
            raise PhoneError(f"cannot listen on {self.acs.url} / port {self._jwks_port}: {exc.strerror or exc}"
                             " (is another 'callbot dial' running?)") from None
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
        answered = await self.acs.wait_answered(context, within=answer_timeout)
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
        call = PhoneCall(self, answered, ws, rate, placed, answered_at,
                         leg=TelephoneLeg(rate) if self.telephone_leg else None, connected_at=time.monotonic())
        self.calls.append(call)
        call.start_reading()
        await ws.send_str(orjson.dumps({"kind": "AudioMetadata", "audioMetadata": {
            "subscriptionId": answered.call_connection_id, "encoding": "PCM", "sampleRate": rate,
            "channels": 1, "length": rate * 2 // 50}}).decode())
        if connected_event:
            await self.acs.post_callback(answered.callback_uri, "MediaStreamingStarted",
                                         answered.call_connection_id, authorization=self.authorization())
        return call
