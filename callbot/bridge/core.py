"""The call state machine: events in, actions out. No asyncio, no clock reads, no I/O.

The async glue (`bridge.runner`) feeds it caller audio, Voice Live server events and clock ticks, each with `now`
(seconds on a monotonic clock) and executes the actions it returns, in order. Because time is passed in, a recorded
call replays deterministically on a virtual clock.

Playback model. ACS gives no playback acknowledgement, so bot audio is paced: a frame is released only while the audio
already released and not yet played (the "lead") stays within `lead_ms`. `play_cursor` is the wall time at which the
released audio finishes playing; everything before `now` has been heard. An item's heard audio is therefore
`sent_ms - max(0, item_end_at - now)`, exact to within the lead's uncertainty about ACS's own buffering.
"""

from __future__ import annotations

import binascii
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from callbot.acs import media
from callbot.audio.framing import Framer
from callbot.config import Settings
from callbot.voicelive import session as vl

log = logging.getLogger(__name__)

FRAME_MS = 20
GOODBYE = "Our time is up for this call. Thank you for calling, goodbye."
BENIGN_ERROR_CODES = {"response_cancel_not_active"}
MAX_RESTORED_TURNS = 40
MAX_RESTORED_CHARS = 2000


@dataclass(slots=True)
class AcsAudio:
    """Send one 20 ms PCM frame to ACS. Dropped by the runner if `epoch` is stale (a barge-in happened since)."""

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


@dataclass(slots=True)
class Turn:
    role: str  # "caller" | "bot"
    text: str
    interrupted: bool = False


@dataclass(slots=True)
class _Item:
    item_id: str
    response_id: str
    content_index: int = 0
    received_ms: float = 0.0
    sent_ms: float = 0.0
    end_at: float = 0.0  # scheduled end of its last released frame
    settled: bool = False  # truncated, from a lost session, or local audio: never truncated


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
    malformed: int = 0


@dataclass
class CoreConfig:
    call_id: str
    sample_rate: int = 24000
    lead_ms: int = 120
    preconnect_buffer_ms: int = 10000
    max_queue_ms: int = 300_000
    greeting: str = ""
    max_call_seconds: float = 3600.0
    goodbye: str = GOODBYE
    goodbye_timeout_s: float = 15.0
    session: dict[str, Any] = field(default_factory=dict)  # the `session` of session.update

    @classmethod
    def from_settings(cls, call_id: str, settings: Settings) -> CoreConfig:
        return cls(
            call_id=call_id,
            sample_rate=settings.media_sample_rate,
            lead_ms=settings.callbot_playback_lead_ms,
            preconnect_buffer_ms=settings.callbot_preconnect_buffer_ms,
            greeting=settings.callbot_greeting,
            max_call_seconds=settings.callbot_max_call_seconds,
            session=vl.build_session(settings),
        )


@dataclass
class BridgeCore:
    cfg: CoreConfig
    stats: Stats = field(default_factory=Stats)
    turns: list[Turn] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bytes_per_ms = self.cfg.sample_rate * 2 / 1000
        self.frame_bytes = int(self.bytes_per_ms * FRAME_MS)
        self.frame_s = FRAME_MS / 1000
        self.lead_s = self.cfg.lead_ms / 1000
        self.ready = False
        self.media_ready = False  # the ACS media socket is attached: bot audio may be released
        self.greeted = False
        self.epoch = 0
        self.started_at: float | None = None
        self.ending_since: float | None = None
        self.ended = False
        self.play_cursor = 0.0
        self.queue: deque[tuple[_Item, bytes]] = deque()
        self.preconnect: deque[str] = deque(maxlen=max(1, self.cfg.preconnect_buffer_ms // FRAME_MS))
        self.items: dict[str, _Item] = {}
        self.framer = Framer(self.frame_bytes)
        self.framer_item: _Item | None = None
        self.active_response: str | None = None
        self.cancelled: dict[str, None] = {}  # ordered: oldest pruned first
        # Ending: "model" waits for the model's goodbye response to finish playing, "local" for local audio.
        self.ending_via: str | None = None
        self.goodbye_response: str | None = None
        self.reconnects = 0
        self.max_queue_frames = self.cfg.max_queue_ms // FRAME_MS
        self.end_reason = ""
        self.unknown_kinds: set[str] = set()

    # -- time --------------------------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        if self.started_at is None:
            self.started_at = now

    def media_started(self, now: float) -> None:
        """The ACS media socket is attached. Until then bot audio (e.g. the greeting of a session opened while ACS
        was still connecting the media) waits in the queue, and playback starts from here."""
        self.media_ready = True

    def playing(self, now: float) -> bool:
        return (self.media_ready and bool(self.queue)) or self.play_cursor > now

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do (None: only new input can create work)."""
        deadlines: list[float] = []
        if self.queue and self.media_ready:
            deadlines.append(self.play_cursor + self.frame_s - self.lead_s)
        if self.started_at is not None and self.ending_since is None:
            deadlines.append(self.started_at + self.cfg.max_call_seconds)
        if self.ending_since is not None and not self.ended:
            deadlines.append(self.ending_since + self.cfg.goodbye_timeout_s)
            if not self.queue and self._ending_audio_done():
                deadlines.append(self.play_cursor)
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.ended:
            return actions
        if self.queue and self.media_ready:
            if self.play_cursor < now:
                self.play_cursor = now  # nothing buffered at ACS: playback (re)starts now
            limit = now + self.lead_s + 1e-9
            while self.queue and self.play_cursor + self.frame_s <= limit:
                item, frame = self.queue.popleft()
                self.play_cursor += self.frame_s
                item.sent_ms += len(frame) / self.bytes_per_ms
                item.end_at = self.play_cursor
                self.stats.bot_frames += 1
                actions.append(AcsAudio(frame, self.epoch))
        self._check_time(now, actions)
        return actions

    def _check_time(self, now: float, actions: list[Action]) -> None:
        if self.started_at is None or self.ended:
            return
        if self.ending_since is None:
            if now - self.started_at >= self.cfg.max_call_seconds:
                log.info("call %s: maximum call duration of %.0f s reached", self.cfg.call_id,
                         self.cfg.max_call_seconds)
                actions.extend(self.end_call(now, "max_call_seconds"))
            return
        played = self._ending_audio_done() and not self.playing(now)
        if played or now - self.ending_since >= self.cfg.goodbye_timeout_s:
            self.ended = True
            actions.append(HangUp(self.end_reason))

    def _ending_audio_done(self) -> bool:
        if self.ending_via == "model":
            return self.goodbye_response is None or not self.ready
        return True

    def end_call(self, now: float, reason: str, *, local_audio: bytes = b"") -> list[Action]:
        """End the call on purpose: a last message is played (the model's goodbye when the session is up, else
        `local_audio` when given), then HangUp once it has played; bounded by goodbye_timeout_s."""
        if self.ending_since is not None:
            return []
        self.ending_since = now
        self.end_reason = reason
        actions: list[Action] = []
        if self.ready and self.cfg.goodbye:
            actions.extend(self._interrupt(now))
            actions.append(VlSend(vl.say(self.cfg.goodbye)))
            self.ending_via = "model"
            self.goodbye_response = "pending"
        elif local_audio:
            actions.extend(self._interrupt(now))
            self.ending_via = "local"
            item = _Item("local", "local", settled=True)
            frames = self.framer.push(local_audio)
            tail = self.framer.flush(pad=True)
            for frame in [*frames, *([tail] if tail else [])]:
                self._enqueue(item, frame)
        else:
            self.ended = True
            actions.append(HangUp(reason))
        return actions

    def acs_message(self, now: float, raw: str | bytes) -> list[Action]:
        """One message from the ACS media socket. Malformed ones are counted, logged (rate-limited) and skipped."""
        try:
            msg = media.parse_media_message(raw)
        except media.MediaParseError as exc:
            self.stats.malformed += 1
            if self.stats.malformed <= 10 or self.stats.malformed % 100 == 0:
                log.warning("call %s: malformed media message skipped (%s); %d so far",
                            self.cfg.call_id, exc, self.stats.malformed)
            return []
        if isinstance(msg, media.AudioData):
            return self.caller_audio(now, msg.b64)
        if isinstance(msg, media.DtmfData):
            return self.dtmf(now, msg.data)
        if isinstance(msg, media.AudioMetadata):
            log.info("call %s: media stream %s %d Hz, %d channel(s)", self.cfg.call_id, msg.encoding,
                     msg.sample_rate, msg.channels)
            if msg.sample_rate != self.cfg.sample_rate:
                log.error("call %s: ACS streams %d Hz but the bridge expects %d Hz (CALLBOT_MEDIA_FORMAT)",
                          self.cfg.call_id, msg.sample_rate, self.cfg.sample_rate)
            return []
        if msg.kind not in self.unknown_kinds and len(self.unknown_kinds) < 32:
            self.unknown_kinds.add(msg.kind)
            log.info("call %s: media message kind %r ignored", self.cfg.call_id, msg.kind)
        return []

    def caller_audio(self, now: float, b64: str) -> list[Action]:
        self.stats.caller_frames += 1
        if self.ready:
            return [VlSend(vl.append_audio(b64))]
        if len(self.preconnect) == self.preconnect.maxlen:
            self.stats.caller_frames_dropped += 1
        self.preconnect.append(b64)
        self.stats.caller_frames_buffered += 1
        return []

    def dtmf(self, now: float, digits: str) -> list[Action]:
        self.stats.dtmf += 1
        log.info("call %s: DTMF %s", self.cfg.call_id, digits)
        return []

    def session_opened(self, now: float) -> list[Action]:
        """A Voice Live connection is open: configure it and, after a reconnect, restore the conversation so far.
        Caller audio waits for `session.updated`."""
        actions: list[Action] = [VlSend({"type": "session.update", "session": self.cfg.session})]
        for turn in self.turns[-MAX_RESTORED_TURNS:]:
            text = turn.text[:MAX_RESTORED_CHARS]
            actions.append(VlSend(vl.restore_item("user" if turn.role == "caller" else "assistant", text)))
        return actions

    def session_ready(self, now: float) -> list[Action]:
        if self.ready:
            return []
        self.ready = True
        actions: list[Action] = []
        if self.cfg.greeting and not self.greeted:
            self.greeted = True
            actions.append(VlSend(vl.say(self.cfg.greeting)))
        while self.preconnect:
            actions.append(VlSend(vl.append_audio(self.preconnect.popleft())))
        return actions

    def session_lost(self, now: float, unsent_audio: list[str] | None = None) -> list[Action]:
        """Voice Live went away. Audio already received keeps playing; caller audio is buffered until a session is
        ready again (`unsent_audio`: appends that never left, put back in front); nothing refers to the old
        session's responses or items any more."""
        self.ready = False
        if self.active_response is not None:
            self.cancelled[self.active_response] = None
            self.active_response = None
        for item in self.items.values():
            item.settled = True
        if self.goodbye_response is not None:
            self.goodbye_response = None
        if unsent_audio:
            room = (self.preconnect.maxlen or 0) - len(self.preconnect)
            self.stats.caller_frames_dropped += max(0, len(unsent_audio) - room)
            for b64 in reversed(unsent_audio[-room:] if room > 0 else []):
                self.preconnect.appendleft(b64)
        return []

    # -- Voice Live -> caller ----------------------------------------------------------------------------------

    def server_event(self, now: float, ev: dict[str, Any]) -> list[Action]:
        etype = ev.get("type")
        if etype == "response.audio.delta":
            self._audio_delta(ev)
            return []
        if etype == "input_audio_buffer.speech_started":
            return self._barge_in(now)
        if etype == "session.updated":
            return self.session_ready(now)
        if etype == "response.created":
            rid = _str(ev.get("response"), "id")
            if rid:
                self.active_response = rid
                if self.goodbye_response == "pending":
                    self.goodbye_response = rid
            self._prune(now)
        elif etype == "response.output_item.added":
            item_id, rid = _str(ev.get("item"), "id"), ev.get("response_id")
            if item_id and isinstance(rid, str) and item_id not in self.items:
                self.items[item_id] = _Item(item_id, rid)
        elif etype == "response.audio.done":
            if self.framer_item is not None and self.framer_item.item_id == ev.get("item_id"):
                self._flush_framer()
        elif etype == "response.done":
            return self._response_done(now, ev)
        elif etype == "conversation.item.input_audio_transcription.completed":
            text = str(ev.get("transcript") or "").strip()
            if text:
                self.turns.append(Turn("caller", text))
                log.info("call %s: caller: %s", self.cfg.call_id, text)
        elif etype == "response.audio_transcript.done":
            text = str(ev.get("transcript") or "").strip()
            if text:
                interrupted = ev.get("response_id") in self.cancelled
                self.turns.append(Turn("bot", text, interrupted))
                log.info("call %s: bot%s: %s", self.cfg.call_id, " (interrupted)" if interrupted else "", text)
        elif etype == "error":
            self._error(ev)
        return []

    def _audio_delta(self, ev: dict[str, Any]) -> None:
        rid = ev.get("response_id")
        if rid in self.cancelled or self.ended:
            self.stats.late_deltas_dropped += 1
            return
        delta, item_id = ev.get("delta"), ev.get("item_id")
        if not isinstance(delta, str) or not isinstance(item_id, str) or not isinstance(rid, str):
            return
        try:
            pcm = binascii.a2b_base64(delta)
        except binascii.Error:
            log.warning("call %s: undecodable audio delta skipped", self.cfg.call_id)
            return
        item = self.items.get(item_id)
        if item is None:
            item = self.items[item_id] = _Item(item_id, rid)
        content_index = ev.get("content_index")
        item.content_index = content_index if isinstance(content_index, int) else 0
        item.received_ms += len(pcm) / self.bytes_per_ms
        if self.framer_item is not item:
            self._flush_framer()
            self.framer_item = item
        for frame in self.framer.push(pcm):
            self._enqueue(item, frame)

    def _enqueue(self, item: _Item, frame: bytes) -> None:
        if len(self.queue) >= self.max_queue_frames:
            self.stats.bot_frames_dropped += 1
            return
        self.queue.append((item, frame))

    def _flush_framer(self) -> None:
        if self.framer_item is not None:
            rest = self.framer.flush(pad=True)
            if rest:
                self._enqueue(self.framer_item, rest)
        self.framer_item = None

    def _response_done(self, now: float, ev: dict[str, Any]) -> list[Action]:
        response = ev.get("response") if isinstance(ev.get("response"), dict) else {}
        rid = _str(response, "id")
        status = _str(response, "status")
        if self.framer_item is not None and self.framer_item.response_id == rid:
            self._flush_framer()
        if rid and rid == self.active_response:
            self.active_response = None
        if rid and rid == self.goodbye_response:
            self.goodbye_response = None
        if status == "failed":
            details = response.get("status_details") if isinstance(response, dict) else None
            log.warning("call %s: response %s failed: %s", self.cfg.call_id, rid, details)
        actions: list[Action] = []
        self._check_time(now, actions)
        return actions

    def _barge_in(self, now: float) -> list[Action]:
        """Caller started speaking: the bot stops at once and the model learns what the caller really heard."""
        if self.ending_since is not None:
            return []
        actions = self._interrupt(now)
        if actions:
            self.stats.barge_ins += 1
            log.info("call %s: barge-in: %s", self.cfg.call_id, ", ".join(type(a).__name__ for a in actions))
        return actions

    def _interrupt(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.playing(now):
            actions.append(AcsStop())
            self.stats.stop_audio += 1
        self.queue.clear()
        self.framer.clear()
        self.framer_item = None
        self.epoch += 1
        if self.active_response is not None:
            self.cancelled[self.active_response] = None
            actions.append(VlSend(vl.cancel_response(self.active_response)))
            self.stats.cancels += 1
            self.active_response = None
        for item in self.items.values():
            if item.settled:
                continue
            item.settled = True
            self.cancelled[item.response_id] = None
            unplayed_ms = max(0.0, (item.end_at - now) * 1000) if item.sent_ms else 0.0
            heard = int(min(max(0.0, item.sent_ms - unplayed_ms), item.received_ms))
            if 0 < heard < int(item.received_ms):
                actions.append(VlSend(vl.truncate(item.item_id, item.content_index, heard)))
                self.stats.truncates += 1
        self.play_cursor = min(self.play_cursor, now)
        return actions

    def _prune(self, now: float) -> None:
        """Forget items that are fully played (nothing left to truncate), keeping memory flat over long calls."""
        done = [k for k, it in self.items.items() if it.settled or (it.sent_ms >= it.received_ms and it.end_at <= now
                                                                       and it is not self.framer_item)]
        for k in done:
            del self.items[k]
        while len(self.cancelled) > 64:
            del self.cancelled[next(iter(self.cancelled))]

    def _error(self, ev: dict[str, Any]) -> None:
        err = ev.get("error") if isinstance(ev.get("error"), dict) else {}
        code = _str(err, "code") or "unknown"
        if code in BENIGN_ERROR_CODES:
            log.debug("call %s: Voice Live: %s", self.cfg.call_id, code)
            return
        self.stats.voicelive_errors += 1
        log.warning("call %s: Voice Live error %s (%s): %s", self.cfg.call_id, code, _str(err, "type"),
                    _str(err, "message"))


def _str(obj: Any, key: str) -> str | None:
    if isinstance(obj, dict):
        value = obj.get(key)
        if isinstance(value, str):
            return value
    return None
