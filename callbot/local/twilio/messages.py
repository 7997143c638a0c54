"""Twilio's wire, as the stand-in speaks it: ids, the voice webhook's form, Media Streams messages, REST errors.

Media Streams (Twilio -> the app; every message but ``connected`` carries ``sequenceNumber``, a string counting from
"1", and ``streamSid``): ``connected`` ({protocol "Call", version "1.0.0"}), ``start`` (accountSid, streamSid,
callSid, tracks, mediaFormat {encoding "audio/x-mulaw", sampleRate 8000, channels 1}, customParameters from the
``<Parameter>`` nouns), ``media`` ({track "inbound", chunk: a string counting from "1", timestamp: milliseconds
since the stream started, as a string, payload: base64 mu-law}), ``dtmf`` ({track "inbound_track", digit}),
``mark`` (the name the app sent, echoed once played) and ``stop`` ({accountSid, callSid}).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

API_VERSION = "2010-04-01"
MULAW_FORMAT: Mapping[str, Any] = MappingProxyType({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1})
FRAME_BYTES = 160  # 20 ms of mu-law at 8 kHz
SAMPLE_RATE = 8000
MULAW_SILENCE = b"\xff"


def sid(prefix: str) -> str:
    """A Twilio resource sid: two letters and 32 hex digits (``CA...`` calls, ``AC...`` accounts, ``MZ...`` streams)."""
    return prefix + secrets.token_hex(16)


def derived_credentials(secret: str) -> tuple[str, str]:
    """A stable account sid and auth token derived from a local secret (for local profiles that predate Twilio)."""
    digest = hmac.new(secret.encode(), b"callbot local twilio", hashlib.sha256).hexdigest()
    return "AC" + digest[:32], digest[32:64]


def voice_webhook_form(call_sid: str, account_sid: str, caller: str, called: str) -> dict[str, str]:
    """The form Twilio posts to a number's voice URL when a call comes in (the parameters Twilio always sends)."""
    return {
        "AccountSid": account_sid, "ApiVersion": API_VERSION, "CallSid": call_sid, "CallStatus": "ringing",
        "Called": called, "Caller": caller, "Direction": "inbound", "From": caller, "To": called,
        "CallToken": "", "CalledCountry": "US", "CallerCountry": "US", "FromCountry": "US", "ToCountry": "US",
    }


def _dump(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


class StreamMessages:
    """Builds one stream's messages to the app, numbering them as Twilio does (sequence, chunk, timestamp)."""

    def __init__(self, account_sid: str, call_sid: str, stream_sid: str) -> None:
        self.account_sid, self.call_sid, self.stream_sid = account_sid, call_sid, stream_sid
        self.sequence = 0
        self.chunk = 0

    def _next(self, event: str, **body: Any) -> str:
        self.sequence += 1
        return _dump({"event": event, "sequenceNumber": str(self.sequence), **body, "streamSid": self.stream_sid})

    @staticmethod
    def connected() -> str:
        return _dump({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, custom_parameters: dict[str, str]) -> str:
        return self._next("start", start={
            "accountSid": self.account_sid, "streamSid": self.stream_sid, "callSid": self.call_sid,
            "tracks": ["inbound"], "customParameters": custom_parameters, "mediaFormat": dict(MULAW_FORMAT)})

    def media(self, payload: bytes, timestamp_ms: int) -> str:
        self.chunk += 1
        return self._next("media", media={"track": "inbound", "chunk": str(self.chunk),
                                          "timestamp": str(timestamp_ms),
                                          "payload": base64.b64encode(payload).decode("ascii")})

    def dtmf(self, digit: str) -> str:
        return self._next("dtmf", dtmf={"track": "inbound_track", "digit": digit})

    def mark(self, name: str) -> str:
        return self._next("mark", mark={"name": name})

    def stop(self) -> str:
        return self._next("stop", stop={"accountSid": self.account_sid, "callSid": self.call_sid})


def rest_error(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's REST error body (e.g. 401 / 20003 "Authenticate", 404 / 20404 "... was not found")."""
    return {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}
