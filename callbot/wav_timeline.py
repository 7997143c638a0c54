"""Where each frame of a recorded call goes on the WAV's timeline (`callbot export-wav`, `callbot replay --wav`).

The two channels are placed differently. The bot's frames are played by ACS one after the other from when they
are sent, so they are laid back to back from their send time (`place_bot`). The caller's frames were spoken in real
time and reach callbot late or in bursts when delivery stalls; laid back to back from their arrival, a burst pushes
every later frame back by the stall for the rest of the call, and the WAV then shows the bot stopping before the
caller barged in. `place_caller` puts each frame where it was spoken instead.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence

from callbot.bridge.playback import FRAME_MS

CALLER_LOOKAHEAD_MS = 5000
"""Delivery stalls up to this long are undone completely; a caller clock running fast by 100 ppm moves frames back
by at most 0.5 ms."""


def place_bot(events: Sequence[tuple[float, bytes | None]], rate: int) -> list[tuple[int, bytes]]:
    """Frames back to back from their send time, a gap where sending paused; `None` (StopAudio) cuts what is
    scheduled after its time."""
    segments: list[tuple[int, bytes]] = []
    cursor, slack = 0, rate * FRAME_MS // 1000
    for t_ms, pcm in events:
        pos = round(t_ms * rate / 1000)
        if pcm is None:
            segments = [(s, p[: 2 * (pos - s)] if s + len(p) // 2 > pos else p) for s, p in segments if s < pos]
            cursor = min(cursor, pos)
            continue
        start = pos if pos > cursor + slack or not segments else cursor
        segments.append((start, pcm))
        cursor = start + len(pcm) // 2
    return segments


def place_caller(frames: Sequence[tuple[float, bytes]], rate: int) -> list[tuple[int, bytes]]:
    """Caller frames where they were spoken, on the timeline of frames that arrived on time (a frame starts at its
    arrival). A frame that came late (a delivery stall, then a burst) is moved back: it cannot have been spoken
    later than the frames after it allow, so it starts at most at ``arrival(j) - audio between it and j`` for
    every frame j up to ``CALLER_LOOKAHEAD_MS`` of audio later. Never after its own arrival, never overlapping,
    no drift after a stall; a real pause in sending stays a pause."""
    lengths = [len(pcm) // 2 for _, pcm in frames]
    offsets = list(itertools.accumulate(lengths, initial=0))  # samples of caller audio before each frame
    baseline = [round(t_ms * rate / 1000) - offsets[i] for i, (t_ms, _) in enumerate(frames)]
    horizon = CALLER_LOOKAHEAD_MS * rate // 1000
    earliest = [0] * len(frames)
    window: deque[int] = deque()  # frames ahead within the horizon; smallest baseline first
    for i in reversed(range(len(frames))):  # sliding minimum of the baseline over the frames ahead
        while window and baseline[window[-1]] >= baseline[i]:
            window.pop()
        window.append(i)
        while offsets[window[0]] - offsets[i] > horizon:
            window.popleft()
        earliest[i] = baseline[window[0]]
    segments: list[tuple[int, bytes]] = []
    cursor = 0
    for i, (_, pcm) in enumerate(frames):
        start = max(offsets[i] + earliest[i], cursor)
        segments.append((start, pcm))
        cursor = start + lengths[i]
    return segments
