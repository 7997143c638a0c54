"""The caller's audio on its way to the model, and what survives a lost Voice Live session (pure: no I/O, no clock).

Three places a caller frame (the base64 payload of one `input_audio_buffer.append`) can be:

- **waiting**: no session is ready (connecting, reconnecting): held, bounded by `CALLBOT_PRECONNECT_BUFFER_MS`
  (the oldest dropped and counted beyond it), and sent in order the moment a session is ready;
- **in the ring**: handed to a session since the model last committed (`input_audio_buffer.committed`) or cleared
  the input buffer, bounded by bytes (`RING_MS` of the session's input format). The model has not turned it into a
  user item yet, so if the session is lost now - a Voice Live error, a dropped socket, or a socket that died
  silently (no FIN, no RST) and swallowed every frame written into it until the heartbeat noticed - nobody has
  heard it;
- **to re-send**: after a loss, the ring's frames go to the next session first, then the frames that waited, then
  live audio. The words a caller spoke while the network was silently dead reach the new session.

Audio still in the bridge's outbox when a session is lost is already in the ring (a frame enters the ring when
the core hands it out), so the outbox is simply emptied.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import pybase64

from callbot.audio.b64 import decode_b64
from callbot.audio.formats import FRAME_MS, VOICELIVE_INPUT_CODECS, voicelive_input
from callbot.bridge.state import Stats

RING_MS = 10_000  # caller audio kept for a re-send: about the longest a silent drop goes unnoticed, with margin


class CallerAudio:
    def __init__(self, stats: Stats, waiting_frames: int, ring_bytes: int, append_frames: int = 1) -> None:
        self.stats = stats
        self.append_frames = max(1, append_frames)  # caller frames per append (CALLBOT_MODEL_APPEND_MS / 20)
        self.grouping: list[str] = []  # frames of the next append, while a session is ready
        self.waiting: deque[str] = deque()
        self.max_waiting = max(1, waiting_frames)
        self.ring: deque[str] = deque()
        self.ring_bytes = 0  # audio bytes in the ring (read off the base64 length)
        self.max_ring_bytes = max(1, ring_bytes)
        self.resend: list[str] = []

    @classmethod
    def for_session(cls, stats: Stats, session: Mapping[str, Any], waiting_ms: int, append_ms: int = FRAME_MS
                    ) -> CallerAudio:
        """Bounds from the `session` of session.update (its input format: pcm16 at its rate, or G.711 at 8 kHz)."""
        fmt = str(session.get("input_audio_format", "pcm16"))
        model_input = voicelive_input(fmt if fmt in VOICELIVE_INPUT_CODECS else "pcm16",
                                      int(session.get("input_audio_sampling_rate") or 24000))
        return cls(stats, waiting_ms // FRAME_MS, int(RING_MS * model_input.bytes_per_ms), append_ms // FRAME_MS)

    def take(self, b64: str) -> str | None:
        """A live frame while a session is ready: the append to send now (now in the ring), or None while frames are
        grouped into a longer append (`CALLBOT_MODEL_APPEND_MS`)."""
        if self.append_frames > 1:
            self.grouping.append(b64)
            if len(self.grouping) < self.append_frames:
                return None
            b64 = join_b64(self.grouping)
            self.grouping = []
        self.sent(b64)
        return b64

    def hold(self, b64: str) -> None:
        """No session is ready: keep the frame for the next one (the oldest goes beyond the bound)."""
        if len(self.waiting) >= self.max_waiting:
            self.waiting.popleft()
            self.stats.caller_frames_dropped += 1
        self.waiting.append(b64)
        self.stats.caller_frames_buffered += 1

    def sent(self, b64: str) -> None:
        """The frame goes to the session now: kept until the model commits (the oldest leaves beyond the bound)."""
        self.ring.append(b64)
        self.ring_bytes += _size(b64)
        while self.ring_bytes > self.max_ring_bytes and len(self.ring) > 1:
            self.ring_bytes -= _size(self.ring.popleft())

    def committed(self) -> None:
        """The model took the input buffer (a user item) or cleared it: nothing before now needs re-sending."""
        self.ring.clear()
        self.ring_bytes = 0

    def lost(self) -> None:
        """The session is gone: what it may not have heard goes to the next one first (a second loss before a new
        session was ready keeps the first's frames in front). A half-grouped append was never sent: it follows."""
        self.resend.extend(self.ring)
        self.resend.extend(self.grouping)
        self.grouping = []
        self.committed()

    def drain(self) -> list[str]:
        """A session is ready: every frame for it, in order (re-sent, waited, nothing live yet). Each is now sent."""
        frames = self.resend + list(self.waiting)
        self.stats.caller_frames_resent += len(self.resend)
        self.resend = []
        self.waiting.clear()
        for b64 in frames:
            self.sent(b64)
        return frames


def join_b64(parts: list[str]) -> str:
    """One base64 string for the concatenated audio of `parts`: the strings themselves when none is padded (a 20 ms
    frame of 24 kHz PCM is 960 bytes, a multiple of 3), else decoded and encoded again."""
    if not any(part.endswith("=") for part in parts):
        return "".join(parts)
    return pybase64.b64encode_as_string(b"".join(decode_b64(part) for part in parts))


def _size(b64: str) -> int:
    """The bytes a (padded) base64 string decodes to, without decoding it."""
    return len(b64) * 3 // 4 - b64[-2:].count("=")
