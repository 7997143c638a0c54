"""The call state machine: events in, actions out. No asyncio, no clock reads, no I/O.

The async glue (`bridge.runner`) feeds it caller audio, Voice Live server events and clock ticks, each with `now`
(seconds on a monotonic clock) and executes the actions it returns, in order. Because time is passed in, a recorded
call replays deterministically on a virtual clock.

What the caller hears (the paced bot audio queue and the truncation maths) is `bridge.playback`; this module decides
when: sessions, responses, barge-in, buffering of caller audio, and ending the call.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from callbot.audio.b64 import decode_b64
from callbot.bridge.actions import Action, HangUp, Leave, Notify, PlayAudio, RunTool, StopPlayback, Transfer, VlSend
from callbot.bridge.agent import AgentActions
from callbot.bridge.caller_audio import CallerAudio
from callbot.bridge.keypad import Keypad
from callbot.bridge.playback import Playback, PlayItem
from callbot.bridge.state import GOODBYE, CoreConfig, Stats, Turn
from callbot.bridge.state import str_field as _str
from callbot.voicelive import session as vl

log = logging.getLogger(__name__)

__all__ = ["GOODBYE", "Action", "BridgeCore", "CoreConfig", "HangUp", "Leave", "Notify", "PlayAudio", "RunTool",
           "Stats", "StopPlayback", "Transfer", "Turn", "VlSend"]

BENIGN_ERROR_CODES = frozenset({"response_cancel_not_active"})
MAX_RESTORED_TURNS = 40
MAX_RESTORED_CHARS = 2000


@dataclass
class BridgeCore(AgentActions):
    cfg: CoreConfig
    stats: Stats = field(default_factory=Stats)
    turns: list[Turn] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.playback = Playback(self.cfg.audio or self.cfg.sample_rate, self.cfg.lead_ms, self.cfg.max_queue_ms,
                                 self.cfg.chunk_ms)
        self.ready = False
        self.greeted = False
        self.started_at: float | None = None
        self.ending_since: float | None = None
        self.ended = False
        self.caller = CallerAudio.for_session(self.stats, self.cfg.session, self.cfg.preconnect_buffer_ms,
                                             self.cfg.append_ms)
        self.active_response: str | None = None
        self.last_audio_response: str | None = None  # the last response that sent audio
        self.cancelled: dict[str, None] = {}  # ordered: oldest pruned first
        # Ending: "model" waits for the model's goodbye response to finish playing, "local" for local audio.
        self.ending_via: str | None = None
        self.goodbye_response: str | None = None
        self.end_reason = ""
        self.pregenerated_ok = True  # False once the service refused a pre-generated assistant message
        self.last_said = ""
        self.personal_level = logging.INFO if self.cfg.log_transcripts else logging.DEBUG
        self.keypad = Keypad(self.cfg.dtmf_pause_s)
        self._init_agent()

    # -- time --------------------------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        if self.started_at is None:
            self.started_at = now

    @property
    def queue(self) -> deque[tuple[PlayItem, bytes]]:
        """Bot audio waiting to be released (the runner wakes the playout when it stops being empty)."""
        return self.playback.queue

    @property
    def epoch(self) -> int:
        return self.playback.epoch

    def media_started(self, now: float) -> None:
        """The ACS media socket is attached. Until then bot audio (e.g. the greeting of a session opened while ACS
        was still connecting the media) waits in the queue, and playback starts from here."""
        self.playback.media_ready = True

    def playing(self, now: float) -> bool:
        return self.playback.playing(now)

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do (None: only new input can create work)."""
        deadlines: list[float] = []
        release = self.playback.next_release()
        if release is not None:
            deadlines.append(release)
        if self.started_at is not None and self.ending_since is None:
            deadlines.append(self.started_at + self.cfg.max_call_seconds)
        keys = self.keypad.deadline()
        if keys is not None and self.ready:
            deadlines.append(keys)
        agent = self._agent_deadline()
        if agent is not None:
            deadlines.append(agent)
        if self.ending_since is not None and not self.ended:
            deadlines.append(self.ending_since + self.cfg.goodbye_timeout_s)
            if not self.queue and self._ending_audio_done():
                deadlines.append(self.playback.play_cursor)
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.ended:
            return actions
        epoch = self.playback.epoch
        frame_bytes = self.playback.frame_bytes
        for chunk in self.playback.release(now):
            self.stats.bot_frames += len(chunk) // frame_bytes
            actions.append(PlayAudio(chunk, epoch))
        if self.keypad.keys:
            actions.extend(self._keys_due(now))
        if self.calls or self.transfer_state == "handover":
            actions.extend(self._agent_due(now))
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
        # queued audio counts even before the media socket is attached: the last words wait for it (bounded)
        played = self._ending_audio_done() and not self.queue and not self.playing(now)
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
            actions.append(self._say(self.cfg.goodbye))
            self.ending_via = "model"
            self.goodbye_response = "pending"
        elif local_audio:
            actions.extend(self._interrupt(now))
            self.ending_via = "local"
            self.playback.add_local(local_audio)
        else:
            self.ended = True
            actions.append(HangUp(reason))
        return actions

    def malformed(self, now: float, reason: str) -> list[Action]:
        """A transport message that cannot be used: counted, logged (rate-limited) and skipped."""
        self.stats.malformed += 1
        if self.stats.malformed <= 10 or self.stats.malformed % 100 == 0:
            log.warning("call %s: malformed %s message skipped (%s); %d so far",
                        self.cfg.call_id, self.cfg.transport, reason, self.stats.malformed)
        return []

    def played(self, now: float, ms: float) -> list[Action]:
        """The transport reports how much bot audio it has played since the last stop (web page, Twilio marks)."""
        self.playback.played(now, ms)
        return []

    def caller_audio(self, now: float, b64: str) -> list[Action]:
        self.stats.caller_frames += 1
        if self.ended:  # hung up or transferred: what the caller says now is not the model's
            return []
        if self.ready:
            append = self.caller.take(b64)
            return [] if append is None else [VlSend(vl.append_audio(append))]
        self.caller.hold(b64)
        return []

    def session_opened(self, now: float) -> list[Action]:
        """A Voice Live connection is open: configure it and, after a reconnect, restore the conversation so far.
        Caller audio waits for `session.updated`."""
        actions: list[Action] = [VlSend(vl.session_update(self.cfg.session))]
        for turn in self.turns[-MAX_RESTORED_TURNS:]:
            text = turn.text[:MAX_RESTORED_CHARS]
            if turn.role == "tool":  # the call, then its output
                actions.append(VlSend(vl.function_call_item(turn.call_id, turn.name, turn.arguments)))
                actions.append(VlSend(vl.function_output(turn.call_id, text)))
            else:
                actions.append(VlSend(vl.restore_item("user" if turn.role == "caller" else "assistant", text)))
        actions.extend(self._restore_calls())
        return actions

    def session_ready(self, now: float) -> list[Action]:
        if self.ready:
            return []
        self.ready = True
        actions: list[Action] = []
        if self.cfg.greeting and not self.greeted:
            self.greeted = True
            actions.append(self._say(self.cfg.greeting))
        actions.extend(VlSend(vl.append_audio(b64)) for b64 in self.caller.drain())  # re-sent, waited
        actions.extend(self._keys_due(now))
        actions.extend(self._agent_due(now))
        return actions

    def session_lost(self, now: float) -> list[Action]:
        """Voice Live went away. Audio already received keeps playing; the caller audio the model had not
        committed is re-sent to the next session, before what the caller says until it is ready (`CallerAudio`);
        nothing refers to the old session's responses or items any more."""
        self.ready = False
        if self.active_response is not None:
            self.cancelled[self.active_response] = None
            self.active_response = None
        self.playback.settle_all()
        if self.goodbye_response is not None:
            self.goodbye_response = None
        self.handover_response = None
        self.caller.lost()
        return []

    # -- Voice Live -> caller ----------------------------------------------------------------------------------

    def server_event(self, now: float, ev: dict[str, Any]) -> list[Action]:
        etype = ev.get("type")
        if etype == "response.audio.delta":
            self._audio_delta(ev)
            return []
        if etype == "input_audio_buffer.speech_started":
            actions = self._barge_in(now)
            if self.cfg.notify:
                actions.append(Notify({"type": "speech", "state": "started"}))
            return actions
        if etype == "session.updated":
            was_ready = self.ready
            actions = self.session_ready(now)
            if self.cfg.notify and not was_ready:
                actions.append(Notify({"type": "ready"}))
            return actions
        if etype == "input_audio_buffer.committed" or etype == "input_audio_buffer.cleared":
            self.caller.committed()
            return []
        if etype == "input_audio_buffer.speech_stopped":
            return [Notify({"type": "speech", "state": "stopped"})] if self.cfg.notify else []
        if etype == "response.created":
            rid = _str(ev.get("response"), "id")
            if rid:
                self.active_response = rid
                if self.goodbye_response == "pending":
                    self.goodbye_response = rid
                if self.handover_response == "pending":
                    self.handover_response = rid
            self._prune(now)
        elif etype == "response.output_item.added":
            item_id, rid = _str(ev.get("item"), "id"), ev.get("response_id")
            if item_id and isinstance(rid, str):
                self.playback.item(item_id, rid)
        elif etype == "response.output_item.done":
            item, rid = ev.get("item"), ev.get("response_id")
            if isinstance(item, dict) and isinstance(rid, str):
                return self._output_item(now, item, rid)
        elif etype == "response.audio.done":
            item_id = ev.get("item_id")
            if isinstance(item_id, str):
                self.playback.audio_done(item_id)
        elif etype == "response.done":
            return self._response_done(now, ev)
        elif etype == "conversation.item.input_audio_transcription.completed":
            text = str(ev.get("transcript") or "").strip()
            if text:
                self.turns.append(Turn("caller", text))
                log.log(self.personal_level, "call %s: caller: %s", self.cfg.call_id, text)
                if self.cfg.notify:
                    return [Notify({"type": "transcript", "role": "caller", "text": text, "interrupted": False})]
        elif etype == "response.audio_transcript.done":
            text = str(ev.get("transcript") or "").strip()
            if text:
                interrupted = ev.get("response_id") in self.cancelled
                self.turns.append(Turn("bot", text, interrupted))
                log.log(self.personal_level, "call %s: bot%s: %s", self.cfg.call_id,
                        " (interrupted)" if interrupted else "", text)
                if self.cfg.notify:
                    return [Notify({"type": "transcript", "role": "bot", "text": text, "interrupted": interrupted})]
        elif etype == "error":
            return self._error(ev)
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
            pcm = decode_b64(delta)
        except ValueError:  # binascii.Error, or text that is not ASCII
            log.warning("call %s: undecodable audio delta skipped", self.cfg.call_id)
            return
        self.last_audio_response = rid
        item = self.playback.item(item_id, rid)
        content_index = ev.get("content_index")
        item.content_index = content_index if isinstance(content_index, int) else 0
        dropped = self.playback.dropped
        self.playback.add(item, pcm)
        self.stats.bot_frames_dropped += self.playback.dropped - dropped

    def _response_done(self, now: float, ev: dict[str, Any]) -> list[Action]:
        response = ev.get("response") if isinstance(ev.get("response"), dict) else {}
        rid = _str(response, "id")
        status = _str(response, "status")
        if rid:
            self.playback.response_done(rid)
        if rid and rid == self.active_response:
            self.active_response = None
        if rid and rid == self.goodbye_response:
            self.goodbye_response = None
        if status == "failed":
            details = response.get("status_details") if isinstance(response, dict) else None
            log.warning("call %s: response %s failed: %s", self.cfg.call_id, rid, details)
        actions: list[Action] = []
        output = response.get("output") if isinstance(response, dict) and rid else None
        for item in output if isinstance(output, list) else []:  # calls whose output_item.done never came
            if isinstance(item, dict) and rid:
                actions.extend(self._output_item(now, item, rid))
        if rid:
            actions.extend(self._response_finished(now, rid))
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
        """Stop the bot now: StopAudio (only when something plays), cancel the response in progress, truncate each
        item cut short at what the caller heard; later deltas of those responses are discarded."""
        was_playing, heard, responses = self.playback.interrupt(now)
        actions: list[Action] = []
        if was_playing:
            actions.append(StopPlayback())
            self.stats.stop_audio += 1
        if self.active_response is not None:
            self.cancelled[self.active_response] = None
            actions.append(VlSend(vl.cancel_response(self.active_response)))
            self.stats.cancels += 1
            self.active_response = None
        for rid in responses:
            self.cancelled[rid] = None
        for cut in heard:
            actions.append(VlSend(vl.truncate(cut.item.item_id, cut.item.content_index, cut.audio_end_ms)))
            self.stats.truncates += 1
        return actions

    def _prune(self, now: float) -> None:
        self.playback.prune(now)
        while len(self.cancelled) > 64:
            del self.cancelled[next(iter(self.cancelled))]

    def _say(self, text: str) -> VlSend:
        self.last_said = text
        return VlSend(vl.say(text) if self.pregenerated_ok else vl.say_by_instructions(text))

    def _error(self, ev: dict[str, Any]) -> list[Action]:
        err = ev.get("error") if isinstance(ev.get("error"), dict) else {}
        code = _str(err, "code") or "unknown"
        if code in BENIGN_ERROR_CODES:
            log.debug("call %s: Voice Live: %s", self.cfg.call_id, code)
            return []
        self.stats.voicelive_errors += 1
        log.warning("call %s: Voice Live error %s (%s): %s", self.cfg.call_id, code, _str(err, "type"),
                    _str(err, "message"))
        about = f"{_str(err, 'param') or ''} {_str(err, 'message') or ''}"
        if self.pregenerated_ok and "pre_generated_assistant_message" in about and self.last_said:
            # this service or model does not take pre-generated messages: ask the model to say it instead
            self.pregenerated_ok = False
            log.info("call %s: pre-generated messages refused; the model is asked to say them instead",
                     self.cfg.call_id)
            return [self._say(self.last_said)]
        return []

