"""One call through the Twilio stand-in: the Media Stream from the caller's side.

The line (`start_line` + `say`) sends a ``media`` message every 20 ms for the whole call: 160 bytes of mu-law 8 kHz,
the queued utterance (16-bit PCM at 8 kHz, encoded here, as the phone network does) or mu-law silence (0xFF). The
bot's ``media`` goes through a `Playout` model of Twilio's buffer; ``received`` holds what played (decoded, with
the time each 20 ms started playing) and each ``clear`` (as ``StopAudio``), so `run_script` judges what the caller
heard. ``marks`` (callbot's, in arrival order), ``echoed`` (the stand-in's echoes) and ``arrivals`` (each bot
``media`` payload with its arrival time) are kept for tests and the benchmark. Messages that are not Twilio's
(bad JSON, an unknown event, a payload that is not base64, another stream's sid) are skipped and counted in
``malformed``, as Twilio logs error 31951 and carries on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from callbot.audio import pcm16_to_ulaw, ulaw_to_pcm16
from callbot.local.caller.line import Utterances
from callbot.local.caller.messages import CALLER_HUNG_UP, PhoneError, Received, Utterance, close_reason
from callbot.local.caller.telephone import TelephoneLeg
from callbot.local.twilio.messages import FRAME_BYTES, MULAW_SILENCE, SAMPLE_RATE, StreamMessages
from callbot.local.twilio.playout import Playout

if TYPE_CHECKING:
    from callbot.local.twilio.network import TwilioNetwork

log = logging.getLogger(__name__)

PCM_FRAME_BYTES = FRAME_BYTES * 2


@dataclass
class TwilioCall:
    network: TwilioNetwork
    call_sid: str
    ws: aiohttp.ClientWebSocketResponse
    messages: StreamMessages
    parameters: dict[str, str]  # the <Parameter>s of the <Stream>, sent in `start`
    placed_at: float
    answered_at: float
    connected_at: float
    sample_rate: int = SAMPLE_RATE
    received: list[Received] = field(default_factory=list)
    arrivals: list[tuple[float, bytes]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    echoed: list[tuple[float, str]] = field(default_factory=list)
    malformed: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: str | None = None
    ended_at: float | None = None
    transferred_to: str | None = None
    heard_urls: tuple[str, str] | None = None  # the local-only "what the agent heard" channel: (to call, to sign)
    frames_sent: int = 0
    leg: TelephoneLeg | None = None  # the caller's audio is G.711 already; the bot's is heard as decoded
    line_started_at: float | None = None
    caller_audio: bytearray = field(default_factory=bytearray)
    playout: Playout = field(init=False)
    _send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _line: asyncio.Task[None] | None = None
    _speech: Utterances = field(default_factory=Utterances)
    _echoes: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    def __post_init__(self) -> None:
        self.playout = Playout(self._played, self._echoes.put_nowait, self._cleared)

    @property
    def stream_sid(self) -> str:
        return self.messages.stream_sid

    @property
    def frame_bytes(self) -> int:
        return PCM_FRAME_BYTES

    # -- the stream socket -----------------------------------------------------------------------------------

    async def open(self) -> None:
        """Send ``connected`` and ``start``, then read callbot's messages and play its audio."""
        await self._send(self.messages.connected())
        await self._send(self.messages.start(self.parameters))
        self._tasks += [asyncio.create_task(self._read()), asyncio.create_task(self.playout.run()),
                        asyncio.create_task(self._echo())]  # fmt: skip

    async def _send(self, text: str) -> None:
        async with self._send_lock:
            await self.ws.send_str(text)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._handle(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self._skip("a binary frame")
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            self.end(close_reason(self.close_code))

    def _handle(self, text: str) -> None:
        try:
            message = orjson.loads(text)
            event = message["event"]
            if message.get("streamSid") != self.stream_sid:
                self._skip(f"a {event!r} message for another stream")
                return
            if event == "media":
                payload = base64.b64decode(message["media"]["payload"], validate=True)
                self.arrivals.append((time.monotonic(), payload))
                self.playout.media(payload)
            elif event == "mark":
                name = str(message["mark"]["name"])
                self.marks.append((time.monotonic(), name))
                self.playout.mark(name)
            elif event == "clear":
                self.playout.clear()
            else:
                self._skip(f"an unknown event {str(event)[:40]!r}")
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            self._skip(f"a malformed message ({type(exc).__name__})")

    def _skip(self, what: str) -> None:
        self.malformed += 1
        log.warning("call %s: %s from callbot skipped (Twilio error 31951)", self.call_sid, what)

    def _played(self, at: float, mulaw: bytes) -> None:
        self.received.append(Received(at, "AudioData", ulaw_to_pcm16(mulaw)))
        self.changed.set()

    def _cleared(self, at: float) -> None:
        self.received.append(Received(at, "StopAudio"))
        self.changed.set()

    async def _echo(self) -> None:
        while True:
            name = await self._echoes.get()
            self.echoed.append((time.monotonic(), name))
            try:
                await self._send(self.messages.mark(name))
            except (aiohttp.ClientError, ConnectionResetError):
                return

    def end(self, reason: str) -> None:
        """The call is over (the first reason given is kept): nothing more plays to the caller."""
        if self.end_reason is None:
            self.end_reason, self.ended_at = reason, time.monotonic()
        self.playout.stop()
        self.ended.set()
        self.changed.set()

    async def stop_stream(self, reason: str) -> None:
        """Twilio ends the stream (the call hung up or was redirected): ``stop``, then the socket closes."""
        self.end(reason)
        await self._stop_line()
        if not self.ws.closed:
            try:
                await self._send(self.messages.stop())
            except (aiohttp.ClientError, ConnectionResetError):
                log.debug("call %s: the stream socket was gone before stop", self.call_sid)
            await self.ws.close()

    # -- the caller's line -----------------------------------------------------------------------------------

    def start_line(self) -> None:
        if self._line is None:
            self._line = asyncio.create_task(self._run_line())

    async def say(self, pcm: bytes) -> Utterance:
        """Queue ``pcm`` (16-bit PCM at 8 kHz) on the line; returns once its last frame has gone out."""
        if self._line is None:
            raise RuntimeError("start_line() first")
        if self.ended.is_set() or self._line.done():
            raise PhoneError(f"the call ended before the caller spoke: {self.end_reason or 'the line stopped'}")
        return await self._speech.say(pcm, SAMPLE_RATE, "stream")

    async def press_key(self, key: str) -> None:
        """One key press: a ``dtmf`` message (the line's media goes on)."""
        try:
            await self._send(self.messages.dtmf(key))
        except (ConnectionResetError, aiohttp.ClientError) as exc:
            raise PhoneError(f"the stream socket is gone ({type(exc).__name__})") from None

    async def _run_line(self) -> None:
        start = self.line_started_at = time.monotonic()
        stream_ms = round((start - self.connected_at) * 1000)
        number = 0
        try:
            while not self.closed.is_set() and not self.ended.is_set():
                delay = start + number * 0.02 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                speech = self._speech.next_frame(PCM_FRAME_BYTES)
                frame = MULAW_SILENCE * FRAME_BYTES
                if speech is not None:
                    frame = pcm16_to_ulaw(speech[: len(speech) // 2 * 2]).ljust(FRAME_BYTES, MULAW_SILENCE)
                self.caller_audio += ulaw_to_pcm16(frame)
                await self._send(self.messages.media(frame, stream_ms + number * 20))
                number += 1
                self.frames_sent += 1
                self._speech.sent()
        except (aiohttp.ClientError, ConnectionResetError):
            log.debug("call %s: stream socket gone: the line stops", self.call_sid)
        finally:
            self._speech.fail()

    async def _stop_line(self) -> None:
        if self._line is not None and self._line is not asyncio.current_task():
            self._line.cancel()
            await asyncio.gather(self._line, return_exceptions=True)

    # -- ending ----------------------------------------------------------------------------------------------

    async def hang_up(self) -> None:
        """The caller hangs up: Twilio sends ``stop`` and closes the stream."""
        await self.stop_stream(CALLER_HUNG_UP)
        self.network.rest.completed(self.call_sid)
        await self.close()

    async def close(self) -> None:
        await self._stop_line()
        if not self.ws.closed:
            await self.ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def summary(self) -> dict[str, Any]:
        """Counts for tests and logs."""
        return {"frames_sent": self.frames_sent, "media_in": len(self.arrivals), "marks": len(self.marks),
                "echoed": len(self.echoed), "clears": self.playout.cleared, "malformed": self.malformed}
