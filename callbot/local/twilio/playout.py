"""Twilio's playback buffer for one Media Stream, as a model the stand-in runs in real time.

The app's ``media`` messages (mu-law 8 kHz, any length) are queued in arrival order and played at real time, 20 ms
(160 bytes) at a time: when the buffer runs dry playback stops, and the next audio starts playing when it arrives.
A ``mark`` is echoed (``on_mark``) once every byte queued before it has played; with nothing queued it is echoed at
once. A ``clear`` drops what is queued, cuts the frame playing, and echoes every pending mark at once, as Twilio
does. What played is reported frame by frame (``on_play(start time, mu-law)``) and each clear (``on_clear(time)``),
so the caller's side records what the caller actually heard. ``stop`` ends the stream's playback for good (the call
hung up or was redirected): what is queued never plays, pending marks are never echoed, later messages are ignored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from callbot.local.twilio.messages import FRAME_BYTES, SAMPLE_RATE

FRAME_S = FRAME_BYTES / SAMPLE_RATE


class Playout:
    def __init__(self, on_play: Callable[[float, bytes], None], on_mark: Callable[[str], None],
                 on_clear: Callable[[float], None]) -> None:  # fmt: skip
        self._on_play, self._on_mark, self._on_clear = on_play, on_mark, on_clear
        self._buffer = bytearray()
        self._taken = 0  # bytes taken from the buffer (played, playing or dropped by a clear)
        self._played = 0  # bytes whose playing has finished (or was cut by a clear)
        self._marks: list[tuple[int, str]] = []  # (position in the stream, name), pending
        self._wake = asyncio.Event()
        self._stopped = False
        self.cleared = 0
        self.marks_echoed = 0

    @property
    def queued_bytes(self) -> int:
        return len(self._buffer)

    @property
    def pending_marks(self) -> list[str]:
        return [name for _, name in self._marks]

    def media(self, payload: bytes) -> None:
        if self._stopped:
            return
        self._buffer += payload
        self._wake.set()

    def mark(self, name: str) -> None:
        if self._stopped:
            return
        position = self._taken + len(self._buffer)
        if position <= self._played:
            self._echo(name)
        else:
            self._marks.append((position, name))

    def clear(self) -> None:
        if self._stopped:
            return
        self._taken += len(self._buffer)
        self._buffer.clear()
        self._played = self._taken
        self.cleared += 1
        self._on_clear(time.monotonic())
        marks, self._marks = self._marks, []
        for _, name in marks:
            self._echo(name)

    def stop(self) -> None:
        self._stopped = True
        self._buffer.clear()
        self._marks.clear()
        self._wake.set()

    def _echo(self, name: str) -> None:
        self.marks_echoed += 1
        self._on_mark(name)

    async def run(self) -> None:
        """Play until stopped (or cancelled)."""
        clock: float | None = None  # when the frame being played ends
        while not self._stopped:
            if not self._buffer:
                self._wake.clear()
                await self._wake.wait()
                clock = None  # the buffer ran dry: playback restarts as the audio arrives
                continue
            if clock is None:
                clock = time.monotonic()
            frame = bytes(self._buffer[:FRAME_BYTES])
            del self._buffer[:FRAME_BYTES]
            self._taken += len(frame)
            end = self._taken
            self._on_play(clock, frame)
            clock += len(frame) / SAMPLE_RATE
            delay = clock - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._played = max(self._played, end)
            while self._marks and self._marks[0][0] <= self._played:
                self._echo(self._marks.pop(0)[1])
