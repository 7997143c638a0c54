"""One simulated ACS call of `callbot bench`: placing it, streaming tagged caller audio, measuring the bot's audio.

Measured per call (µs, CLOCK_MONOTONIC):
- caller frames sent with their send time in the window (the synthetic model counts the ones that arrived);
- model -> ACS: the first frame of each response, arrival minus the send time of the delta that carried it;
- pacing, per AudioData message (callbot sends a chunk of whole 20 ms frames in each): after the lead burst
  (`SETTLE_FRAMES`), its inter-arrival deviation from the audio of the messages between (jitter), and how far its first
  frame is behind the response's best-so-far schedule (`arrival - 20 ms * index`, late beyond `LATE_S`);
- StopAudio arrivals, and bot frames of an already stopped response arriving after its StopAudio (must be 0);
- per response: frames received and the next expected index (gaps = lost frames; joined with the model's counts).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from callbot.benchmark import common as c
from callbot.local.acs.network import SAMPLE_RATES, PhoneNetwork
from callbot.local.acs.server import AnsweredCall

OUT_AUDIO_PREFIX = '{"kind":"AudioData","audioData":{"data":"'  # callbot's outbound AudioData, up to the payload
_HEAD = '{"kind":"AudioData","audioData":{"timestamp":"'
_TAIL = '","silent":false}}'
NEVER = 2**62


@dataclass
class Window:
    """The measurement window (µs, CLOCK_MONOTONIC); open-ended until it is set."""

    t0: int = NEVER
    t1: int = NEVER


class AnswerWaiter:
    """Resolves the answer of each placed call through the ACS stand-in's answer hook."""

    def __init__(self, network: PhoneNetwork) -> None:
        self.waiting: dict[str, asyncio.Future[AnsweredCall]] = {}
        network.acs.on_answer = self._on_answer

    async def _on_answer(self, call: AnsweredCall) -> None:
        future = self.waiting.pop(call.incoming_call_context, None)
        if future is not None and not future.done():
            future.set_result(call)

    def expect(self, context: str) -> asyncio.Future[AnsweredCall]:
        future: asyncio.Future[AnsweredCall] = asyncio.get_running_loop().create_future()
        self.waiting[context] = future
        return future


async def place_call(network: PhoneNetwork, http: aiohttp.ClientSession, waiter: AnswerWaiter, window: Window,
                     url: str, secret: str, idx: int) -> MediaCall:
    """Ring callbot as ACS does: IncomingCall webhook, answer, CallConnected, media socket, MediaStreamingStarted."""
    caller = f"+1425{idx:07d}"
    event = network.acs.incoming_call_event(caller)
    context = event["data"]["incomingCallContext"]
    answered_future = waiter.expect(context)
    try:
        status = await network.post_incoming_call(url, secret, event)
        if status != 200:
            raise c.BenchError(f"the IncomingCall webhook answered HTTP {status}")
        async with asyncio.timeout(15):
            answered = await answered_future
    finally:
        waiter.waiting.pop(context, None)
    await network.acs.post_callback(answered.callback_uri, "CallConnected", answered.call_connection_id,
                                    authorization=network.authorization())
    if not answered.transport_url:
        raise c.BenchError("callbot answered without a media transport URL")
    rate = SAMPLE_RATES.get(answered.audio_format or "", 24000)
    if rate != c.SAMPLE_RATE:
        raise c.BenchError(f"callbot asked for {rate} Hz media; the benchmark plays {c.SAMPLE_RATE} Hz (pcm24k)")
    try:
        ws = await http.ws_connect(answered.transport_url, autoping=True, max_msg_size=4 * 1024 * 1024, headers={
            "Authorization": network.authorization(24 * 3600),
            "x-ms-call-connection-id": answered.call_connection_id,
            "x-ms-call-correlation-id": answered.correlation_id,
        })
    except aiohttp.WSServerHandshakeError as exc:
        raise c.BenchError(f"callbot refused the media socket (HTTP {exc.status})") from None
    await ws.send_str(orjson.dumps({"kind": "AudioMetadata", "audioMetadata": {
        "subscriptionId": answered.call_connection_id, "encoding": "PCM", "sampleRate": rate, "channels": 1,
        "length": c.FRAME_BYTES}}).decode())
    await network.acs.post_callback(answered.callback_uri, "MediaStreamingStarted", answered.call_connection_id,
                                    authorization=network.authorization())
    return MediaCall(idx, ws, answered, caller, window)


@dataclass(slots=True)
class BotResponse:
    count: int = 0
    next_index: int = 0
    gaps: int = 0
    last_us: int = 0
    anchor_us: int | None = None
    prev_index: int = -1
    prev_us: int = 0


@dataclass
class MediaCall:
    idx: int
    ws: aiohttp.ClientWebSocketResponse
    answered: AnsweredCall | None  # None on a Twilio call
    caller: str
    window: Window
    seq: int = 0
    sent_in_window: int = 0
    send_errors: int = 0
    responses: dict[int, BotResponse] = field(default_factory=dict)
    forward_us: list[int] = field(default_factory=list)
    jitter_us: list[int] = field(default_factory=list)
    late: int = 0
    after_stop: int = 0
    stops_us: list[int] = field(default_factory=list)
    stopped_upto: int = 0
    max_response: int = 0
    other_messages: dict[str, int] = field(default_factory=dict)
    untagged: int = 0
    closed_us: int | None = None
    close_code: int | None = None
    _reader: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self._mid = f'","participantRawID":"4:{self.caller}","data":"'

    # -- caller audio ----------------------------------------------------------------------------------------

    async def send_frame(self, stamp: str) -> None:
        sent = c.now_us()
        text = _HEAD + stamp + self._mid + c.caller_frame_b64(self.idx, self.seq, sent) + _TAIL
        self.seq += 1
        try:
            await self.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            self.send_errors += 1
            return
        if self.window.t0 <= sent < self.window.t1:
            self.sent_in_window += 1

    # -- bot audio -------------------------------------------------------------------------------------------

    def start_reading(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def stop_reading(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        prefix, start = OUT_AUDIO_PREFIX, len(OUT_AUDIO_PREFIX)
        try:
            async for msg in self.ws:
                arrived = c.now_us()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data: str = msg.data
                if data.startswith(prefix):
                    self._bot_audio(arrived, data, start, data.find('"', start))
                    continue
                self._other(arrived, data)
        finally:
            self.closed_us = c.now_us()
            self.close_code = self.ws.close_code

    def _other(self, arrived: int, data: str) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            message = {}
        kind = str(message.get("kind") or message.get("Kind") or "?") if isinstance(message, dict) else "?"
        if kind == "StopAudio":
            self.stops_us.append(arrived)
            self.stopped_upto = self.max_response
        elif kind == "AudioData":  # another spelling of the same message
            body = message.get("audioData") or message.get("AudioData") or {}
            b64 = str(body.get("data") or body.get("Data") or "")
            self._bot_audio(arrived, b64, 0, len(b64))
        else:
            self.other_messages[kind[:40]] = self.other_messages.get(kind[:40], 0) + 1

    def _bot_audio(self, arrived: int, data: str, start: int, end: int) -> None:
        """One AudioData message: its payload is `data[start:end]`, whole tagged frames."""
        if end < start + c.BOT_TAG_CHARS:
            self.untagged += 1
            return
        first = True
        for offset in range(start, end - c.BOT_TAG_CHARS + 1, c.FRAME_B64_CHARS):
            self._bot_frame(arrived, data[offset:offset + c.BOT_TAG_CHARS], first)
            first = False

    def _bot_frame(self, arrived: int, b64: str, first_of_message: bool) -> None:
        try:
            tag = c.read_bot_tag(b64)
        except ValueError:  # binascii.Error and struct.error are ValueErrors
            self.untagged += 1
            return
        self._bot_tag(arrived, tag, first_of_message)

    def _bot_tag(self, arrived: int, tag: tuple[int, int, int, int], first_of_message: bool) -> None:
        _call, number, index, delta_sent = tag
        t0, t1 = self.window.t0, self.window.t1
        in_window = t0 <= arrived < t1
        response = self.responses.get(number)
        if response is None:
            response = self.responses[number] = BotResponse()
            if index == 0 and t0 <= delta_sent < t1:
                self.forward_us.append(arrived - delta_sent)
        response.count += 1
        response.last_us = arrived
        if index != response.next_index:
            response.gaps += 1
        response.next_index = index + 1
        if number <= self.stopped_upto:
            self.after_stop += 1
        self.max_response = max(self.max_response, number)
        if not first_of_message:
            return  # arrived with the message's first frame, which its pacing is judged by
        if index >= c.SETTLE_FRAMES:
            offset = arrived - index * 20_000
            if response.anchor_us is None or offset < response.anchor_us:
                response.anchor_us = offset
            elif in_window and offset - response.anchor_us > c.LATE_S * 1e6:
                self.late += 1
            if in_window and response.prev_index >= c.SETTLE_FRAMES:
                self.jitter_us.append(abs(arrived - response.prev_us - (index - response.prev_index) * 20_000))
        response.prev_index, response.prev_us = index, arrived

    def result(self, stop: int) -> dict[str, Any]:
        return {
            "sent": self.sent_in_window, "send_errors": self.send_errors,
            "responses": {str(n): [r.count, r.next_index, r.gaps, r.last_us] for n, r in self.responses.items()},
            "forward_us": self.forward_us, "jitter_us": self.jitter_us, "late": self.late,
            "after_stop": self.after_stop, "stops_us": self.stops_us, "untagged": self.untagged,
            "other_messages": self.other_messages,
            "closed_early": self.closed_us is not None and self.closed_us < stop, "close_code": self.close_code,
        }
