"""What the call state machine asks the runner to do: its only outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class AcsAudio:
    """Send PCM to ACS as one AudioData message: whole 20 ms frames, up to the playback chunk (the last frame of an
    answer zero-padded). Dropped by the runner if `epoch` is stale (a barge-in happened since)."""

    pcm: bytes
    epoch: int


@dataclass(slots=True)
class AcsStop:
    """Send StopAudio to ACS: flush what ACS has buffered of the bot's audio."""


@dataclass(slots=True)
class VlSend:
    event: dict[str, Any]


@dataclass(slots=True)
class HangUp:
    reason: str


Action = AcsAudio | AcsStop | VlSend | HangUp
