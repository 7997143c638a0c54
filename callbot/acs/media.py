"""ACS bidirectional media streaming: the WebSocket wire format.

Inbound (ACS -> callbot): `AudioMetadata`, `AudioData`, `DtmfData` (camelCase `kind`, or Microsoft samples' PascalCase
`Kind`/`AudioData`). Outbound (callbot -> ACS): `AudioData` frames and `StopAudio`, always camelCase.

`parse_media_message` is the one parse function: it returns a typed message or raises `MediaParseError` with a short
reason that is safe to log. Audio stays base64 too (`AudioData.b64`) so pass-through forwarding never re-encodes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pybase64

from callbot.audio.b64 import decode_b64, strict_b64_length

__all__ = ["decode_b64", "strict_b64_length"]  # re-exported: the media format is where they are used most

MAX_MESSAGE_BYTES = 256 * 1024  # a 20 ms 24 kHz frame is ~1.3 KB of JSON; anything this big is not ACS audio


class MediaParseError(ValueError):
    """A media message that cannot be used; `str(err)` is a short reason without the payload."""


@dataclass(frozen=True, slots=True)
class AudioMetadata:
    subscription_id: str
    encoding: str
    sample_rate: int
    channels: int
    length: int


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~0.7 µs more, 50 times a second per call
class AudioData:
    """One caller audio frame. `b64` is checked to be canonical base64 of whole 16-bit samples but not decoded:
    the bridge forwards the text as is; `data` decodes it on access (replay, tests)."""

    b64: str
    timestamp: str | None
    participant_raw_id: str | None
    silent: bool

    @property
    def data(self) -> bytes:
        return pybase64.b64decode(self.b64, validate=True)


@dataclass(frozen=True, slots=True)
class DtmfData:
    data: str


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    kind: str


MediaMessage = AudioMetadata | AudioData | DtmfData | UnknownMessage

STOP_AUDIO = '{"kind":"StopAudio","stopAudio":{}}'


def encode_audio(b64: str) -> str:
    """An outbound AudioData message; base64 text needs no JSON escaping, so no serializer is involved."""
    return '{"kind":"AudioData","audioData":{"data":"' + b64 + '"}}'


def encode_audio_bytes(pcm: bytes) -> str:
    return encode_audio(pybase64.b64encode_as_string(pcm))


def _field(obj: dict[str, Any], camel: str, pascal: str) -> Any:
    value = obj.get(camel)
    if value is None:
        value = obj.get(pascal)
    return value


def _str_or_none(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise MediaParseError(f"{name} must be a string")


def parse_media_message(raw: str | bytes) -> MediaMessage:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MediaParseError(f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MediaParseError("not JSON") from None
    if not isinstance(msg, dict):
        raise MediaParseError("not a JSON object")
    kind = _field(msg, "kind", "Kind")
    if not isinstance(kind, str):
        raise MediaParseError("missing or non-string kind")
    if kind == "AudioData":
        return _parse_audio(_body(msg, "audioData", "AudioData"))
    if kind == "AudioMetadata":
        return _parse_metadata(_body(msg, "audioMetadata", "AudioMetadata"))
    if kind == "DtmfData":
        body = _body(msg, "dtmfData", "DtmfData")
        data = _field(body, "data", "Data")
        if not isinstance(data, str) or not data:
            raise MediaParseError("DtmfData.data must be a non-empty string")
        return DtmfData(data=data)
    return UnknownMessage(kind=kind[:64])


def _body(msg: dict[str, Any], camel: str, pascal: str) -> dict[str, Any]:
    body = _field(msg, camel, pascal)
    if not isinstance(body, dict):
        raise MediaParseError(f"{camel} must be an object")
    return body


def _parse_audio(body: dict[str, Any]) -> AudioData:
    b64 = _field(body, "data", "Data")
    if not isinstance(b64, str):
        raise MediaParseError("audioData.data must be a base64 string")
    size = strict_b64_length(b64)
    if size is None:
        raise MediaParseError("audioData.data is not valid base64")
    if size % 2:
        raise MediaParseError("audioData.data is not whole 16-bit samples")
    silent = _field(body, "silent", "Silent")
    if silent is None:
        silent = False
    if not isinstance(silent, bool):
        raise MediaParseError("audioData.silent must be a boolean")
    return AudioData(
        b64=b64,
        timestamp=_str_or_none(_field(body, "timestamp", "Timestamp"), "audioData.timestamp"),
        participant_raw_id=_str_or_none(
            _field(body, "participantRawID", "ParticipantRawID"), "audioData.participantRawID"
        ),
        silent=silent,
    )


def _parse_metadata(body: dict[str, Any]) -> AudioMetadata:
    def num(camel: str, pascal: str) -> int:
        value = _field(body, camel, pascal)
        if isinstance(value, bool) or not isinstance(value, int):
            raise MediaParseError(f"audioMetadata.{camel} must be an integer")
        return value

    sub = _field(body, "subscriptionId", "SubscriptionId")
    enc = _field(body, "encoding", "Encoding")
    return AudioMetadata(
        subscription_id=sub if isinstance(sub, str) else "",
        encoding=enc if isinstance(enc, str) else "",
        sample_rate=num("sampleRate", "SampleRate"),
        channels=num("channels", "Channels"),
        length=num("length", "Length"),
    )
