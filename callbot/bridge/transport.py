"""The seam between the call core and a call's transport (ACS media streaming, the web phone, Twilio Media Streams).

A transport adapter owns its wire: it parses what the caller's side sends into the neutral inputs below and turns
the core's neutral actions (`PlayAudio`, `StopPlayback`, `Notify`) into its own messages. Adapters are pure like the
core (no I/O, no clock): the runner moves their messages, replay feeds them recorded ones. Per-stream state (a
stream id, the kinds already logged) lives in the adapter instance, one per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from callbot.audio.formats import MediaFormat
from callbot.bridge.actions import Action
from callbot.bridge.core import BridgeCore


@dataclass(slots=True)
class CallerAudio:
    """One frame of the caller's voice, base64 of audio in the transport's format (forwarded to the model as is)."""

    b64: str


@dataclass(slots=True)
class KeyPress:
    digits: str


@dataclass(slots=True)
class Played:
    """The transport's own report of the bot audio it has played since the last stop, in ms."""

    ms: float


@dataclass(slots=True)
class CallerLeft:
    """The caller hung up (the web page's hang-up button; a phone transport's stop message)."""


@dataclass(slots=True)
class Malformed:
    reason: str


Inbound = CallerAudio | KeyPress | Played | CallerLeft | Malformed


class Transport(Protocol):
    name: str  # "acs", "web", "twilio": in recordings and metrics
    media: MediaFormat  # what the wire carries, and how the model session is configured for it
    notify: bool  # whether `Notify` actions reach the caller (the core only makes them when they do)

    def parse(self, raw: str | bytes) -> Inbound | None:
        """One message from the caller's side; None when it means nothing to the call (metadata, unknown kinds)."""
        ...

    def audio_message(self, pcm: bytes) -> str | bytes | tuple[str | bytes, ...]:
        """One chunk of bot audio as the message to send, or as several sent in order (Twilio: media, then its
        mark)."""
        ...

    def stop_message(self) -> str | bytes: ...

    def notify_message(self, event: dict[str, Any]) -> str | bytes | None: ...

    def describe(self, raw: str | bytes) -> dict[str, Any]:
        """An outbound message as the neutral record replay compares: `{"kind": "AudioData", "audioData": {"data":
        base64}}`, `{"kind": "StopAudio", ...}`, or the message's own JSON."""
        ...


def described_json(raw: str | bytes) -> dict[str, Any]:
    """For `Transport.describe`: an outbound JSON message's object, or ``{"kind": "?"}`` when it is not one."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    return body if isinstance(body, dict) else {"kind": "?"}


def dispatch(core: BridgeCore, now: float, msg: Inbound) -> list[Action]:
    """Feed one parsed message to the core (CallerLeft is the runner's to act on: it returns no actions)."""
    if isinstance(msg, CallerAudio):
        return core.caller_audio(now, msg.b64)
    if isinstance(msg, Played):
        return core.played(now, msg.ms)
    if isinstance(msg, KeyPress):
        return core.dtmf(now, msg.digits)
    if isinstance(msg, Malformed):
        return core.malformed(now, msg.reason)
    return []


def messages(out: str | bytes | tuple[str | bytes, ...]) -> tuple[str | bytes, ...]:
    """What `Transport.audio_message` returned, as the messages to send."""
    return out if isinstance(out, tuple) else (out,)


def transport_for(name: str, call_id: str, media: MediaFormat, *, twilio_model_audio: str = "g711_ulaw"
                  ) -> Transport:
    """A fresh adapter for a call (replay builds the recorded call's one by name)."""
    if name == "twilio":
        from callbot.twilio.adapter import TwilioTransport

        return TwilioTransport(call_id, "pcm16" if twilio_model_audio == "pcm16" else "g711_ulaw")
    if name == "web":
        from callbot.web.adapter import WebTransport

        return WebTransport(call_id)
    if name == "acs":
        from callbot.acs.adapter import AcsTransport

        return AcsTransport(call_id, media)
    raise ValueError(f"unknown transport {name!r}")
