"""One simulated Twilio call of `callbot bench --transport twilio`: ringing callbot, streaming tagged mu-law caller
audio, measuring the bot's `media` and echoing its marks.

Measured as on an ACS call (`MediaCall`, whose measures this inherits): caller frames sent in the window, the first
frame of each response (arrival minus its delta's send time), pacing per `media` message, `clear` arrivals and bot
frames of a cleared response arriving after the `clear` (must be 0), lost frames per response. The bot's audio is
mu-law: a `media` payload is decoded and read 160 bytes (one tagged frame) at a time.

Marks: callbot sends a `mark` after each `media` and truncates the model where the echoed marks say the caller is.
Twilio echoes a mark once the audio before it has played; here, a play cursor per call (audio plays in real time from
its arrival, back to back) gives each mark its due time, and due marks are echoed on the caller's 20 ms tick; a
`clear` echoes every pending mark at once, as Twilio does.
"""

from __future__ import annotations

import binascii
from collections import deque
from dataclasses import dataclass, field

import aiohttp
import orjson

from callbot.benchmark import common as c
from callbot.benchmark.acs_calls import MediaCall, Window
from callbot.local.twilio import TwilioNetwork
from callbot.local.twilio.messages import StreamMessages, sid, voice_webhook_form
from callbot.local.twilio.network import VOICE_PATH
from callbot.local.twilio.twiml import TwimlError, parse_twiml

FRAME_US = 20_000


async def place_twilio_call(network: TwilioNetwork, http: aiohttp.ClientSession, window: Window, url: str,
                            idx: int) -> TwilioMediaCall:
    """Ring callbot as Twilio does: the signed voice webhook, its TwiML followed, the stream opened and started."""
    caller = f"+1425{idx:07d}"
    call_sid = sid("CA")
    network.rest.add_call(call_sid, caller, network.number)
    form = voice_webhook_form(call_sid, network.account_sid, caller, network.number)
    status, body = await network.post_voice_webhook(url.rstrip("/") + VOICE_PATH, form)
    if status != 200:
        raise c.BenchError(f"the Twilio voice webhook answered HTTP {status}")
    try:
        action = parse_twiml(body)
    except TwimlError as exc:
        raise c.BenchError(f"callbot's TwiML cannot be followed: {exc}") from None
    if action.verb != "stream" or action.url is None:
        raise c.BenchError(f"callbot's TwiML did not connect a stream ({action.verb} {action.reason or ''})")
    try:
        ws = await http.ws_connect(action.url, autoping=True, max_msg_size=4 * 1024 * 1024,
                                   headers={"X-Twilio-Signature": network.sign(action.url, {})})
    except aiohttp.WSServerHandshakeError as exc:
        raise c.BenchError(f"callbot refused the stream socket (HTTP {exc.status})") from None
    network.rest.set_status(call_sid, "in-progress")
    stream = StreamMessages(network.account_sid, call_sid, sid("MZ"))
    await ws.send_str(stream.connected())
    await ws.send_str(stream.start(action.parameters))
    return TwilioMediaCall(idx, ws, None, caller, window, stream=stream, call_sid=call_sid)


@dataclass
class TwilioMediaCall(MediaCall):
    stream: StreamMessages = field(default_factory=lambda: StreamMessages("", "", ""))
    call_sid: str = ""
    marks: deque[tuple[int, str]] = field(default_factory=deque)  # (due, name), pending echo
    marks_echoed: int = 0
    play_end_us: int = 0  # when the audio received so far has played

    def __post_init__(self) -> None:
        sid_json = orjson.dumps(self.stream.stream_sid).decode()
        self._media_prefix = '{"event":"media","streamSid":' + sid_json + ',"media":{"payload":"'
        self._tail = '"},"streamSid":' + sid_json + "}"

    # -- caller audio ----------------------------------------------------------------------------------------

    async def send_frame(self, stamp: str) -> None:
        sent = c.now_us()
        stream = self.stream
        stream.sequence += 1
        stream.chunk += 1
        text = (f'{{"event":"media","sequenceNumber":"{stream.sequence}","media":{{"track":"inbound",'
                f'"chunk":"{stream.chunk}","timestamp":"{self.seq * 20}","payload":"'
                + c.caller_frame_mulaw(self.idx, self.seq, sent) + self._tail)
        self.seq += 1
        try:
            await self.ws.send_str(text)
            while self.marks and self.marks[0][0] <= sent:
                await self._echo(self.marks.popleft()[1])
        except (ConnectionError, RuntimeError):
            self.send_errors += 1
            return
        if self.window.t0 <= sent < self.window.t1:
            self.sent_in_window += 1

    async def _echo(self, name: str) -> None:
        self.marks_echoed += 1
        await self.ws.send_str(self.stream.mark(name))

    async def _echo_quietly(self, name: str) -> None:
        try:
            await self._echo(name)
        except (ConnectionError, RuntimeError):
            self.send_errors += 1

    # -- bot audio -------------------------------------------------------------------------------------------

    async def _read(self) -> None:
        prefix, start = self._media_prefix, len(self._media_prefix)
        try:
            async for msg in self.ws:
                arrived = c.now_us()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data: str = msg.data
                if data.startswith(prefix):
                    self._media(arrived, data[start:data.find('"', start)])
                else:
                    await self._control(arrived, data)
        finally:
            self.closed_us = c.now_us()
            self.close_code = self.ws.close_code

    def _media(self, arrived: int, payload: str) -> None:
        try:
            raw = binascii.a2b_base64(payload)
        except binascii.Error:
            self.untagged += 1
            return
        tags = c.read_bot_tags(raw, c.MULAW_FRAME_BYTES)
        if not tags:
            self.untagged += 1
            return
        self.play_end_us = max(self.play_end_us, arrived) + FRAME_US * len(raw) // c.MULAW_FRAME_BYTES
        first = True
        for tag in tags:
            self._bot_tag(arrived, tag, first)
            first = False

    async def _control(self, arrived: int, data: str) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            message = {}
        event = str(message.get("event") or "?") if isinstance(message, dict) else "?"
        if event == "mark":
            name = str((message.get("mark") or {}).get("name") or "")
            if self.play_end_us <= arrived:
                await self._echo_quietly(name)
            else:
                self.marks.append((self.play_end_us, name))
        elif event == "clear":
            self.stops_us.append(arrived)
            self.stopped_upto = self.max_response
            self.play_end_us = arrived
            while self.marks:
                await self._echo_quietly(self.marks.popleft()[1])
        else:
            self.other_messages[event[:40]] = self.other_messages.get(event[:40], 0) + 1
