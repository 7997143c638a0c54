"""What goes over a simulated call's media socket, and why a call ended: the records of `callbot.local.acs.network`."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

import orjson

from callbot.audio.formats import ACS_FORMATS

SAMPLE_RATES: Mapping[str, int] = MappingProxyType({name: f.sample_rate for name, f in ACS_FORMATS.items()})
CLOSE_REASONS: Mapping[int, str] = MappingProxyType({
    1000: "callbot closed the media socket",
    1001: "callbot closed the media socket (1001: going away)",
    1006: "the media socket dropped (1006: no close frame)",
    1008: "callbot refused the media socket (1008: policy violation; see callbot's log)",
    1009: "callbot closed the media socket (1009: message too big)",
    1011: "callbot closed the media socket (1011: internal error)",
    1013: "callbot refused the media socket (1013: try again later, at its call limit)",
})
CALLBOT_HUNG_UP = "callbot hung up the call (its log says why)"
CALLER_HUNG_UP = "the caller hung up"


class PhoneError(RuntimeError):
    """The call could not be placed (callbot refused the webhook, never answered, refused the media socket)."""


@dataclass
class Received:
    at: float  # time.monotonic()
    kind: str  # "AudioData" | "StopAudio" | other
    audio: bytes = b""


@dataclass(frozen=True)
class Utterance:
    """One caller utterance sent on the line: when its first/last frame went out, and when the speech in it
    (frames above a low level) started and ended."""

    started_at: float
    ended_at: float
    speech_at: float
    speech_end_at: float


def close_reason(code: int | None) -> str:
    """Why the media socket ended, from its close code (None: it dropped without a close frame)."""
    if code is None:
        return "the media socket dropped (no close frame)"
    return CLOSE_REASONS.get(code, f"callbot closed the media socket ({code})")


def audio_message(pcm: bytes, *, silent: bool = False, participant: str = "4:+14255550123") -> str:
    return orjson.dumps({"kind": "AudioData", "audioData": {
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "participantRawID": participant, "data": base64.b64encode(pcm).decode("ascii"), "silent": silent,
    }}).decode()


def dtmf_message(key: str, *, participant: str = "4:+14255550123") -> str:
    """One key press as ACS streams it to the media socket (``enableDtmfTones``): a ``DtmfData`` message."""
    return orjson.dumps({"kind": "DtmfData", "dtmfData": {
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"), "participantRawID": participant,
        "data": key}}).decode()
