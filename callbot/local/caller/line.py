"""The caller's speech on a simulated line (ACS's or Twilio's): utterances queued by ``say``, cut into 20 ms frames
for the line to send, each one's future resolved with its `Utterance` timings once its last frame has gone out."""

from __future__ import annotations

import asyncio
import time

from callbot.local.caller.messages import PhoneError, Utterance
from callbot.local.caller.telephone import speech_bounds

SAY_MARGIN_S = 10.0  # an utterance on the line takes its own length; beyond this margin the line is stuck


class Utterances:
    """What the caller has still to say, one frame of 16-bit PCM at a time."""

    def __init__(self) -> None:
        self._queue: list[tuple[bytes, asyncio.Future[Utterance]]] = []
        self._current: tuple[bytes, asyncio.Future[Utterance]] | None = None
        self._offset = 0
        self._first_at = 0.0
        self._bounds = (0, 0)
        self._times: list[float] = []

    def add(self, pcm: bytes) -> asyncio.Future[Utterance]:
        """Queue `pcm`; the future resolves when its last frame has been `sent`."""
        done: asyncio.Future[Utterance] = asyncio.get_running_loop().create_future()
        self._queue.append((pcm, done))
        return done

    async def say(self, pcm: bytes, sample_rate: int, socket: str) -> Utterance:
        """Queue `pcm` and wait until its last frame has gone out; `PhoneError` if the line fails first or does
        not send it in time (its `socket` stalled)."""
        done = self.add(pcm)
        try:
            async with asyncio.timeout(len(pcm) / (2 * sample_rate) + SAY_MARGIN_S):
                return await done
        except TimeoutError:
            raise PhoneError(f"the line did not send the caller's speech in time ({socket} socket stalled)") from None

    def next_frame(self, frame_bytes: int) -> bytes | None:
        """The next frame of speech (the last one of an utterance may be short), or None: nothing to say now."""
        if self._current is None and self._queue:
            self._current, self._offset, self._first_at = self._queue.pop(0), 0, time.monotonic()
            self._bounds, self._times = speech_bounds(self._current[0], frame_bytes), []
        if self._current is None:
            return None
        chunk = self._current[0][self._offset : self._offset + frame_bytes]
        self._offset += frame_bytes
        return chunk

    def sent(self) -> None:
        """The frame `next_frame` gave has gone out: at the utterance's end, its future gets the timings."""
        if self._current is None:
            return
        times = self._times
        times.append(time.monotonic())
        pcm, done = self._current
        if self._offset >= len(pcm):
            first, last = self._bounds
            if not done.done():
                done.set_result(Utterance(self._first_at, times[-1], times[min(first, len(times) - 1)],
                                          times[max(0, last - 1)]))  # fmt: skip
            self._current = None

    def fail(self) -> None:
        """The line stopped: every utterance not yet sent fails with `PhoneError`."""
        pending = [self._current] if self._current is not None else []
        for _, future in [*pending, *self._queue]:
            if not future.done():
                future.set_exception(PhoneError("the call ended before the utterance was sent"))
        self._queue.clear()
        self._current = None
