"""The web phone's adapter of the transport seam: the page's WebSocket <-> the core's neutral inputs and actions.

Wire (the page is `callbot/web/static/phone.js`):
- page -> callbot: binary = caller audio, PCM 16-bit little-endian mono 24 kHz (the page resamples), whole samples,
  at most 100 ms a message; text JSON `{"type": "played", "ms": N}` (bot audio the page has really played since
  the last `stop`), `{"type": "hangup"}`, `{"type": "dtmf", "digits": "1"}`.
- callbot -> page: binary = bot audio in the same format, whole 20 ms frames; text JSON `{"type": "stop"}`,
  `{"type": "ready"}`, `{"type": "transcript", "role", "text", "interrupted"}`, `{"type": "speech", "state"}`,
  `{"type": "ended", "reason"}`.
Anything else is malformed: skipped and counted like a bad ACS media frame.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pybase64

from callbot.audio.formats import MEDIA_FORMATS
from callbot.bridge.transport import CallerAudio, CallerLeft, Inbound, KeyPress, Malformed, Played, described_json

MEDIA = MEDIA_FORMATS["pcm24k"]
MAX_AUDIO_BYTES = MEDIA.audio.frame_bytes(100)
MAX_TEXT_BYTES = 1024
DTMF_KEYS = frozenset("0123456789*#ABCD")
STOP = orjson.dumps({"type": "stop"}).decode()


class WebTransport:
    name = "web"
    media = MEDIA
    notify = True

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id

    def parse(self, raw: str | bytes) -> Inbound | None:
        if isinstance(raw, bytes | bytearray):
            if not raw or len(raw) > MAX_AUDIO_BYTES or len(raw) % 2:
                return Malformed(f"audio of {len(raw)} bytes (whole 16-bit samples, 1 to {MAX_AUDIO_BYTES})")
            return CallerAudio(pybase64.b64encode_as_string(raw))
        if len(raw) > MAX_TEXT_BYTES:
            return Malformed(f"text message of {len(raw)} characters")
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return Malformed("not JSON")
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "played":
            ms = msg.get("ms")
            if isinstance(ms, int | float) and not isinstance(ms, bool) and math.isfinite(ms) and ms >= 0:
                return Played(float(ms))
            return Malformed("played.ms must be a number >= 0")
        if kind == "hangup":
            return CallerLeft()
        if kind == "dtmf":
            digits = msg.get("digits")
            if isinstance(digits, str) and 0 < len(digits) <= 32 and set(digits) <= DTMF_KEYS:
                return KeyPress(digits)
            return Malformed("dtmf.digits must be 1-32 of 0-9 * # A-D")
        return Malformed(f"unknown message type {str(kind)[:32]!r}")

    def audio_message(self, pcm: bytes) -> bytes:
        return pcm

    def stop_message(self) -> str:
        return STOP

    def notify_message(self, event: dict[str, Any]) -> str:
        return orjson.dumps(event).decode()

    def describe(self, raw: str | bytes) -> dict[str, Any]:
        if isinstance(raw, bytes | bytearray):
            return {"kind": "AudioData", "audioData": {"data": pybase64.b64encode_as_string(raw)}}
        body = described_json(raw)
        if body.get("type") == "stop":
            return {"kind": "StopAudio", "stopAudio": {}}
        return body


def ended_message(reason: str) -> str:
    return orjson.dumps({"type": "ended", "reason": reason}).decode()
