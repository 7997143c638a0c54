"""What a call's core is configured with and keeps: its settings, its counters and its conversation turns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from callbot.audio.formats import MEDIA_FORMATS, Audio, MediaFormat
from callbot.config import Settings
from callbot.voicelive import session as vl

GOODBYE = "Our time is up for this call. Thank you for calling, goodbye."


@dataclass(slots=True)
class Turn:
    role: str  # "caller" | "bot"
    text: str
    interrupted: bool = False


@dataclass(slots=True)
class Stats:
    caller_frames: int = 0
    caller_frames_buffered: int = 0
    caller_frames_dropped: int = 0
    bot_frames: int = 0
    bot_frames_dropped: int = 0
    late_deltas_dropped: int = 0
    barge_ins: int = 0
    stop_audio: int = 0
    cancels: int = 0
    truncates: int = 0
    voicelive_errors: int = 0
    dtmf: int = 0
    dtmf_sequences: int = 0
    malformed: int = 0


@dataclass
class CoreConfig:
    call_id: str
    sample_rate: int = 24000
    audio: Audio | None = None  # the transport's audio (None: 16-bit PCM at sample_rate)
    transport: str = "acs"
    notify: bool = False  # emit Notify actions (transcripts, speech state) for transports that show them
    lead_ms: int = 120
    chunk_ms: int = 20
    preconnect_buffer_ms: int = 10000
    max_queue_ms: int = 300_000
    greeting: str = ""
    max_call_seconds: float = 3600.0
    goodbye: str = GOODBYE
    goodbye_timeout_s: float = 15.0
    dtmf: str = "model"  # "model": key presses reach the model as text; "off": counted only
    dtmf_pause_s: float = 1.5
    log_transcripts: bool = False  # transcripts and key presses are personal data: DEBUG unless this is on
    session: dict[str, Any] = field(default_factory=dict)  # the `session` of session.update

    @classmethod
    def from_settings(cls, call_id: str, settings: Settings, media: MediaFormat | None = None,
                      transport: str = "acs", notify: bool = False) -> CoreConfig:
        """`media`: the format the call's transport carries (default: `CALLBOT_MEDIA_FORMAT`, ACS's)."""
        media = media or MEDIA_FORMATS[settings.callbot_media_format]
        return cls(
            call_id=call_id,
            sample_rate=media.sample_rate,
            audio=media.audio,
            transport=transport,
            notify=notify,
            lead_ms=settings.callbot_playback_lead_ms,
            chunk_ms=settings.callbot_playback_chunk_ms,
            preconnect_buffer_ms=settings.callbot_preconnect_buffer_ms,
            greeting=settings.callbot_greeting,
            max_call_seconds=settings.callbot_max_call_seconds,
            log_transcripts=settings.callbot_log_transcripts,
            dtmf=settings.callbot_dtmf,
            dtmf_pause_s=settings.callbot_dtmf_pause_ms / 1000,
            session=vl.build_session(settings, media),
        )
