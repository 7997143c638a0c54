"""The Twilio Media Streams adapter of the transport seam: Twilio's JSON stream messages <-> the core's neutral inputs
and actions.

Wire (bidirectional `<Connect><Stream>`; every message is a JSON text frame):
- Twilio -> callbot: `connected`; `start` (`start.streamSid`, `start.callSid`, `start.mediaFormat` = audio/x-mulaw,
  8000 Hz, 1 channel, `start.customParameters` = the TwiML `<Parameter>`s); `media` (`media.track` "inbound",
  `media.payload` base64 mu-law, 160 bytes = 20 ms); `dtmf` (`dtmf.digit`); `mark` (`mark.name`, echoed when the audio
  sent before the mark has played, and also when a `clear` discards it); `stop` (the call or the stream ended).
- callbot -> Twilio: `media` (`streamSid`, `media.payload`) followed by a `mark` for each bot audio message, and
  `clear` on a barge-in.

Marks: each one is named `<clear count>.<ms of bot audio sent since that clear>`. An echo of the current clear count
tells the core how much the caller has really heard (`Played`); an echo from before the latest `clear` (Twilio sends
back the marks a `clear` discarded) means nothing was heard of it and is ignored.

Model audio (`CALLBOT_TWILIO_MODEL_AUDIO`): `g711_ulaw` passes Twilio's payload to Voice Live untouched and the
model's mu-law back (the core frames mu-law, pads with 0xFF); `pcm16` converts in here: mu-law 8 kHz -> PCM16 ->
stateful anti-aliased resampler -> 24 kHz on the way in, 24 kHz -> 8 kHz -> mu-law on the way out (one resampler per
direction, per call, in this instance; the outbound one restarts at each `clear`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

import orjson
import pybase64

from callbot.audio import Resampler, pcm16_to_ulaw, ulaw_to_pcm16
from callbot.audio.b64 import strict_b64_length
from callbot.audio.formats import MEDIA_FORMATS, MediaFormat
from callbot.bridge.transport import CallerAudio, CallerLeft, Inbound, KeyPress, Malformed, Played, described_json

log = logging.getLogger(__name__)

ModelAudio = Literal["g711_ulaw", "pcm16"]
MODEL_MEDIA: Mapping[str, MediaFormat] = MappingProxyType({"g711_ulaw": MEDIA_FORMATS["ulaw8k"],
                                                           "pcm16": MEDIA_FORMATS["pcm24k"]})
WIRE = MEDIA_FORMATS["ulaw8k"].audio  # what Twilio carries, always
MAX_TEXT_CHARS = 16 * 1024  # a 200 ms media message is ~2.2 KB; start with its parameters well under this
MAX_MEDIA_BYTES = WIRE.frame_bytes(200)  # any whole number of mu-law bytes up to 200 ms a message
MAX_SID_CHARS = 64
DTMF_KEYS = frozenset("0123456789*#ABCD")
MULAW = ("audio/x-mulaw", 8000, 1)


class TwilioTransport:
    name = "twilio"
    notify = False  # a phone line shows nothing

    def __init__(self, call_id: str, model_audio: ModelAudio = "g711_ulaw") -> None:
        self.call_id = call_id
        self.model_audio = model_audio
        self.media = MODEL_MEDIA[model_audio]
        self.stream_sid = ""
        self.call_sid = ""
        self.parameters: dict[str, str] = {}  # start.customParameters (the token among them)
        self.started = False
        self.format_ok = False
        self.clears = 0  # `clear` messages sent: the first part of every mark's name
        self.sent_ms = 0.0  # bot audio sent since the last clear
        self._sid_json = b'""'
        self._convert = model_audio == "pcm16"
        self._up = Resampler(WIRE.sample_rate, self.media.sample_rate) if self._convert else None
        self._down = Resampler(self.media.sample_rate, WIRE.sample_rate) if self._convert else None

    # -- in ----------------------------------------------------------------------------------------------------

    def parse(self, raw: str | bytes) -> Inbound | None:
        if not isinstance(raw, str):
            return Malformed(f"a binary message of {len(raw)} bytes (Twilio sends JSON text)")
        if len(raw) > MAX_TEXT_CHARS:
            return Malformed(f"a text message of {len(raw)} characters")
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return Malformed("not JSON")
        if not isinstance(msg, dict):
            return Malformed("not a JSON object")
        event = msg.get("event")
        if event == "media":
            return self._media(msg)
        if event == "mark":
            return self._mark(msg)
        if event == "dtmf":
            digit = _body(msg, "dtmf").get("digit")
            if isinstance(digit, str) and len(digit) == 1 and digit in DTMF_KEYS:
                return KeyPress(digit)
            return Malformed("dtmf.digit must be one of 0-9 * # A-D")
        if event == "stop":
            return CallerLeft()
        if event == "start":
            return self._start(msg)
        if event == "connected":
            return None
        return Malformed(f"unknown event {str(event)[:32]!r}")

    def _start(self, msg: dict[str, Any]) -> Inbound | None:
        start = _body(msg, "start")
        stream_sid, call_sid = start.get("streamSid", msg.get("streamSid")), start.get("callSid")
        if not (isinstance(stream_sid, str) and isinstance(call_sid, str) and _sid(stream_sid) and _sid(call_sid)):
            return Malformed("start without a streamSid and callSid")
        if self.started:
            return Malformed("a second start message")
        fmt = start.get("mediaFormat")
        got = (fmt.get("encoding"), fmt.get("sampleRate"), fmt.get("channels")) if isinstance(fmt, dict) else None
        params = start.get("customParameters")
        self.started = True
        self.stream_sid, self.call_sid = stream_sid, call_sid
        self._sid_json = orjson.dumps(stream_sid)
        self.parameters = {k: v for k, v in params.items() if isinstance(k, str) and isinstance(v, str)} \
            if isinstance(params, dict) else {}
        self.format_ok = got == MULAW
        if not self.format_ok:
            log.error("call %s: Twilio stream %s has media format %r; callbot needs audio/x-mulaw 8000 Hz mono",
                      self.call_id, stream_sid, str(got)[:80])
            return Malformed("start.mediaFormat is not audio/x-mulaw 8000 Hz mono")
        log.info("call %s: Twilio stream %s (call %s), mu-law 8 kHz, model audio %s", self.call_id, stream_sid,
                 call_sid, self.model_audio)
        return None

    def _media(self, msg: dict[str, Any]) -> Inbound | None:
        media = _body(msg, "media")
        track = media.get("track", "inbound")
        if track != "inbound":
            return None if isinstance(track, str) else Malformed("media.track is not a string")
        sid = msg.get("streamSid")
        if sid is not None and sid != self.stream_sid:
            return Malformed("media for another stream")
        payload = media.get("payload")
        size = strict_b64_length(payload) if isinstance(payload, str) else None
        if not size or size > MAX_MEDIA_BYTES:
            return Malformed(f"media.payload must be base64 of 1 to {MAX_MEDIA_BYTES} mu-law bytes")
        assert isinstance(payload, str)
        if self._up is None:
            return CallerAudio(payload)  # g711_ulaw: Twilio's bytes reach the model as they are
        pcm = self._up.process(ulaw_to_pcm16(pybase64.b64decode(payload, validate=True)))
        return CallerAudio(pybase64.b64encode_as_string(pcm))

    def _mark(self, msg: dict[str, Any]) -> Inbound | None:
        name = _body(msg, "mark").get("name")
        clears, dot, ms = name.partition(".") if isinstance(name, str) and len(name) <= 32 else ("", "", "")
        if not (dot and clears.isdigit() and ms.isdigit()):
            return Malformed("mark.name is not one of callbot's marks")
        if int(clears) != self.clears:
            return None  # sent before the latest clear: discarded by it, never heard
        return Played(float(ms))

    # -- out ---------------------------------------------------------------------------------------------------

    def audio_message(self, pcm: bytes) -> tuple[str, str]:
        """A bot audio chunk (whole 20 ms frames of the model's audio) as a `media` message and its `mark`."""
        self.sent_ms += len(pcm) / self.media.audio.bytes_per_ms
        wire = pcm16_to_ulaw(self._down.process(pcm)) if self._down is not None else pcm
        sid = self._sid_json.decode()
        media = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"' + \
            pybase64.b64encode_as_string(wire) + '"}}'
        mark = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":"' + f"{self.clears}.{round(self.sent_ms)}" + \
            '"}}'
        return media, mark

    def stop_message(self) -> str:
        self.clears += 1
        self.sent_ms = 0.0
        if self._down is not None:
            self._down.reset()  # the cut-off audio's filter history must not leak into the next answer
        return '{"event":"clear","streamSid":' + self._sid_json.decode() + "}"

    def notify_message(self, event: dict[str, Any]) -> None:
        return None

    def describe(self, raw: str | bytes) -> dict[str, Any]:
        body = described_json(raw)
        if body.get("event") == "media":
            return {"kind": "AudioData", "audioData": {"data": _body(body, "media").get("payload")}}
        if body.get("event") == "clear":
            return {"kind": "StopAudio", "stopAudio": {}}
        return body


def _body(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    return value if isinstance(value, dict) else {}


def _sid(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_SID_CHARS and value.isascii() and value.isalnum()
