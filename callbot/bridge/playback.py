"""What the caller hears: the bot's audio queue, its real-time pacing, and what was heard when it stops.

Pure, like the core that owns it: `now` is passed in. ACS gives no playback acknowledgement, so bot audio is paced:
a frame is released only while the audio already released and not yet played (the "lead") stays within `lead_s`.
Frames are released a chunk at a time (`chunk_ms`, whole 20 ms frames), each chunk one AudioData message: ACS plays
its buffer continuously whatever the message size, and a 40 ms chunk halves the messages, system calls and wake-ups
of a 20 ms one.
`play_cursor` is the wall time at which the released audio finishes playing; everything before `now` has been heard.
An item's heard audio is therefore `sent_ms - max(0, item_end_at - now)`, exact to within the lead's uncertainty about
ACS's own buffering.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from callbot.audio.formats import FRAME_MS, Audio
from callbot.audio.framing import Framer

__all__ = ["FRAME_MS", "Heard", "Playback", "PlayItem"]


@dataclass(slots=True)
class PlayItem:
    """One assistant audio item (or local audio) on its way to the caller."""

    item_id: str
    response_id: str
    content_index: int = 0
    received_ms: float = 0.0
    sent_ms: float = 0.0
    end_at: float = 0.0  # scheduled end of its last released frame
    stream_start_ms: float = 0.0  # where its first frame sits in the audio released since the last interruption
    done: bool = False  # the model has sent all of its audio (response.audio.done / response.done)
    settled: bool = False  # truncated, from a lost session, or local audio: never truncated


@dataclass(slots=True)
class Heard:
    """An interrupted item and how much of it the caller heard: the truncate position."""

    item: PlayItem
    audio_end_ms: int


class Playback:
    def __init__(self, sample_rate: Audio | int, lead_ms: int, max_queue_ms: int, chunk_ms: int = FRAME_MS) -> None:
        audio = Audio(sample_rate, "pcm16") if isinstance(sample_rate, int) else sample_rate  # a rate: 16-bit PCM
        self.audio = audio
        self.bytes_per_ms = audio.bytes_per_ms
        self.frame_bytes = audio.frame_bytes()
        self.frame_s = FRAME_MS / 1000
        self.lead_s = lead_ms / 1000
        self.chunk_frames = max(1, min(chunk_ms, lead_ms) // FRAME_MS)
        self.chunk_s = self.chunk_frames * self.frame_s
        self.max_queue_frames = max_queue_ms // FRAME_MS
        self.media_ready = False  # the ACS media socket is attached: audio may be released
        self.epoch = 0  # bumped by every interruption: frames released before it must not be sent
        self.play_cursor = 0.0
        self.queue: deque[tuple[PlayItem, bytes]] = deque()
        self.items: dict[str, PlayItem] = {}
        self.framer = Framer(self.frame_bytes, audio.silence_byte)
        # what the transport says it has played since the last interruption (None: it cannot tell; pacing decides)
        self.reported_ms: float | None = None
        self.reported_at = 0.0
        self.stream_ms = 0.0  # audio released since the last interruption: where each item starts in that stream
        self.framer_item: PlayItem | None = None
        self.dropped = 0

    def playing(self, now: float) -> bool:
        return (self.media_ready and bool(self.queue)) or self.play_cursor > now

    def next_release(self) -> float | None:
        """When a whole chunk fits within the lead again (frames queued and the media socket attached)."""
        if self.queue and self.media_ready:
            return self.play_cursor + min(self.chunk_frames, len(self.queue)) * self.frame_s - self.lead_s
        return None

    # -- audio in ----------------------------------------------------------------------------------------------

    def item(self, item_id: str, response_id: str) -> PlayItem:
        item = self.items.get(item_id)
        if item is None:
            item = self.items[item_id] = PlayItem(item_id, response_id)
        return item

    def add(self, item: PlayItem, pcm: bytes) -> None:
        """Model audio for `item`: re-framed into 20 ms frames, leftovers carried to the next delta of the item."""
        item.received_ms += len(pcm) / self.bytes_per_ms
        if self.framer_item is not item:
            self.flush()
            self.framer_item = item
        for frame in self.framer.push(pcm):
            self._enqueue(item, frame)

    def flush(self, item_id: str | None = None, response_id: str | None = None) -> None:
        """The item's (or response's, or any) audio is complete: its last partial frame is padded and queued."""
        current = self.framer_item
        if current is None:
            return
        if item_id is not None and current.item_id != item_id:
            return
        if response_id is not None and current.response_id != response_id:
            return
        rest = self.framer.flush(pad=True)
        if rest:
            self._enqueue(current, rest)
        self.framer_item = None

    def audio_done(self, item_id: str) -> None:
        """`response.audio.done` for the item: no more of its audio comes."""
        item = self.items.get(item_id)
        if item is not None:
            item.done = True
        self.flush(item_id=item_id)

    def response_done(self, response_id: str) -> None:
        """`response.done`: every item of the response is complete."""
        self.flush(response_id=response_id)
        for item in self.items.values():
            if item.response_id == response_id:
                item.done = True

    def add_local(self, pcm: bytes) -> None:
        """Audio of callbot's own (the apology): played like model audio, never truncated."""
        item = PlayItem("local", "local", settled=True)
        self.flush()
        frames = self.framer.push(pcm)
        tail = self.framer.flush(pad=True)
        for frame in [*frames, *([tail] if tail else [])]:
            self._enqueue(item, frame)

    def _enqueue(self, item: PlayItem, frame: bytes) -> None:
        if len(self.queue) >= self.max_queue_frames:
            self.dropped += 1
            return
        self.queue.append((item, frame))

    # -- audio out ---------------------------------------------------------------------------------------------

    def release(self, now: float) -> list[bytes]:
        """The audio that may go to ACS now (real time plus the lead), as chunks of up to `chunk_frames` frames."""
        chunks: list[bytes] = []
        if not (self.queue and self.media_ready):
            return chunks
        if self.play_cursor < now:
            self.play_cursor = now  # nothing buffered at ACS: playback (re)starts now
        limit = now + self.lead_s + 1e-9
        queue = self.queue
        while queue:
            count = min(self.chunk_frames, len(queue))  # a whole chunk, or the rest of what is queued
            if self.play_cursor + count * self.frame_s > limit:
                break
            frames: list[bytes] = []
            for _ in range(count):
                item, frame = queue.popleft()
                self.play_cursor += self.frame_s
                if not item.sent_ms:
                    item.stream_start_ms = self.stream_ms
                frame_ms = len(frame) / self.bytes_per_ms
                self.stream_ms += frame_ms
                item.sent_ms += frame_ms
                item.end_at = self.play_cursor
                frames.append(frame)
            chunks.append(frames[0] if count == 1 else b"".join(frames))
        return chunks

    def played(self, now: float, ms: float) -> None:
        """The transport's own word on what it has played since the last interruption (the web page's playback
        clock; Twilio's marks): an upper bound that refines the pacing estimate when the player ran late."""
        self.reported_ms = ms
        self.reported_at = now

    def interrupt(self, now: float) -> tuple[bool, list[Heard], set[str]]:
        """Stop at once: drop everything queued. Returns whether audio was playing (StopAudio needed), the items
        cut short with what the caller heard of each (never more than received; none when nothing of it played),
        and the response ids of every item that was still open."""
        was_playing = self.playing(now)
        self.queue.clear()
        self.framer.clear()
        self.framer_item = None
        self.epoch += 1
        heard: list[Heard] = []
        responses: set[str] = set()
        for item in self.items.values():
            if item.settled:
                continue
            item.settled = True
            responses.add(item.response_id)
            unplayed_ms = max(0.0, (item.end_at - now) * 1000) if item.sent_ms else 0.0
            heard_ms = max(0.0, item.sent_ms - unplayed_ms)
            if self.reported_ms is not None and item.sent_ms:
                # played by the transport's report, plus at most the time since it was made
                reported = self.reported_ms + max(0.0, now - self.reported_at) * 1000 - item.stream_start_ms
                heard_ms = min(heard_ms, max(0.0, reported))
            # whole ms, floored (never more than was heard); the epsilon absorbs float error of frame sums
            end_ms = int(min(heard_ms, item.received_ms) + 1e-6)
            # an item still being generated is truncated even when all it delivered was heard: the service may
            # hold more of it than reached callbot
            if end_ms > 0 and (end_ms < int(item.received_ms + 1e-6) or not item.done):
                heard.append(Heard(item, end_ms))
        self.play_cursor = min(self.play_cursor, now)
        self.stream_ms = 0.0
        if self.reported_ms is not None:
            self.reported_ms, self.reported_at = 0.0, now  # the transport restarts its count at the stop
        return was_playing, heard, responses

    def settle_all(self) -> None:
        """The session that produced these items is gone: they can no longer be truncated."""
        for item in self.items.values():
            item.settled = True

    def prune(self, now: float) -> None:
        """Forget items that are fully played (nothing left to truncate), keeping memory flat over long calls."""
        done = [k for k, it in self.items.items()
                if it.settled or (it.sent_ms >= it.received_ms and it.end_at <= now and it is not self.framer_item)]
        for k in done:
            del self.items[k]
