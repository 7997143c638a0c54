"""What the call state machine asks the runner to do: its only outputs. Transport-neutral: each transport's adapter
(`callbot.acs.adapter`, `callbot.web.adapter`) turns them into its own wire messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class PlayAudio:
    """Play bot audio to the caller as one message: whole 20 ms frames in the transport's format, up to the playback
    chunk (the last frame of an answer padded with silence). Dropped by the runner if `epoch` is stale (a barge-in
    happened since)."""

    pcm: bytes
    epoch: int


@dataclass(slots=True)
class StopPlayback:
    """Stop the bot now: the transport flushes what it has buffered of the bot's audio (ACS StopAudio, the web
    page's `stop`, Twilio's `clear`)."""


@dataclass(slots=True)
class VlSend:
    event: dict[str, Any]


@dataclass(slots=True)
class HangUp:
    reason: str


@dataclass(slots=True)
class Notify:
    """Something a transport may show the caller (the web page's transcript and speech state); phone transports
    ignore it."""

    event: dict[str, Any]


@dataclass(slots=True)
class RunTool:
    """Run one of the model's function calls off the audio path (an operator tool); the runner feeds the result back
    with `BridgeCore.tool_result(now, call_id, output, outcome)`."""

    call_id: str
    name: str
    arguments: str  # the model's JSON string, as it came


@dataclass(slots=True)
class Transfer:
    """Hand the call to a person (the model called `transfer_to_human`, the handover line has played); the outcome
    comes back through `BridgeCore.transfer_outcome`."""

    reason: str


@dataclass(slots=True)
class Leave:
    """The bridge's part in the call is over but the call goes on without it (transferred): end the bridge without
    hanging up."""

    reason: str


class TransferError(Exception):
    """A transfer that could not even be asked for (no call connection, ACS refused the request); the text is short
    and safe to give the model."""


Action = PlayAudio | StopPlayback | VlSend | HangUp | Notify | RunTool | Transfer | Leave
