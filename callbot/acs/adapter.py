"""The ACS media streaming adapter of the transport seam: ACS's JSON media messages <-> the core's neutral inputs
and actions. Audio stays base64 from ACS to the model (never decoded on the way)."""

from __future__ import annotations

import logging
from typing import Any

from callbot.acs import media
from callbot.audio.formats import MediaFormat
from callbot.bridge.transport import CallerAudio, Inbound, KeyPress, Malformed, described_json

log = logging.getLogger(__name__)

MAX_LOGGED_KINDS = 32


class AcsTransport:
    name = "acs"
    notify = False  # a phone line shows nothing

    def __init__(self, call_id: str, media_format: MediaFormat) -> None:
        self.call_id = call_id
        self.media = media_format
        self.unknown_kinds: set[str] = set()  # per call: each unknown kind is logged once

    def parse(self, raw: str | bytes) -> Inbound | None:
        try:
            msg = media.parse_media_message(raw)
        except media.MediaParseError as exc:
            return Malformed(str(exc))
        if isinstance(msg, media.AudioData):
            return CallerAudio(msg.b64)
        if isinstance(msg, media.DtmfData):
            return KeyPress(msg.data)
        if isinstance(msg, media.AudioMetadata):
            log.info("call %s: media stream %s %d Hz, %d channel(s)", self.call_id, msg.encoding,
                     msg.sample_rate, msg.channels)
            if msg.sample_rate != self.media.sample_rate:
                log.error("call %s: ACS streams %d Hz but the bridge expects %d Hz (CALLBOT_MEDIA_FORMAT)",
                          self.call_id, msg.sample_rate, self.media.sample_rate)
            return None
        if msg.kind not in self.unknown_kinds and len(self.unknown_kinds) < MAX_LOGGED_KINDS:
            self.unknown_kinds.add(msg.kind)
            log.info("call %s: media message kind %r ignored", self.call_id, msg.kind)
        return None

    def audio_message(self, pcm: bytes) -> str:
        return media.encode_audio_bytes(pcm)

    def stop_message(self) -> str:
        return media.STOP_AUDIO

    def notify_message(self, event: dict[str, Any]) -> None:
        return None

    def describe(self, raw: str | bytes) -> dict[str, Any]:
        return described_json(raw)
