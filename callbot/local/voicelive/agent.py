"""The offline stand-in's model for one Voice Live session: VAD, ASR, the FAQ responder and TTS.

A :class:`~callbot.local.voicelive.session.Behaviour` on the local protocol server. What it does, like the
service does it:

* turn detection on (any ``turn_detection`` type): every appended chunk goes through a streaming webrtcvad
  detector configured from the session (``threshold``, ``prefix_padding_ms``, ``silence_duration_ms``), giving
  ``input_audio_buffer.speech_started`` / ``speech_stopped`` with ``audio_start_ms`` / ``audio_end_ms``. Speech
  start cancels the response in progress when ``interrupt_response`` is on (server-side interruption). At speech
  stop the user item is committed, the segment is recognised (pocketsphinx, in the stand-in's recognition
  process: it holds the GIL, see :mod:`callbot.local.speech.asr_worker`) and
  ``conversation.item.input_audio_transcription.completed`` sent when transcription is enabled; with
  ``create_response`` the responder's reply is synthesised (espeak-ng, worker thread) and streamed.
* turn detection off: appended audio is kept until ``input_audio_buffer.commit``, then recognised.
* ``response.create``: speaks ``pre_generated_assistant_message`` verbatim; else, when the conversation ends
  with function call outputs (after the last message item), speaks about them through the FAQ's templates
  (whatever outputs are there: calls still without one are left out, as the service does); else answers the
  last user item.
* function calling: an answer's ``TOOL`` parts (see :mod:`callbot.local.voicelive.faq_tools`) become function calls in
  the same response, after its speech, for the function tools the session (or the response) declares.

Nothing heavy runs on the event loop, which only feeds the detector (~25 us a frame): recognition runs in the
recognition process, synthesis (and its G.711 encoding) in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from callbot.audio import alaw_to_pcm16, pcm16_to_alaw, pcm16_to_ulaw, ulaw_to_pcm16
from callbot.audio.formats import PCM24K, VOICELIVE_OUTPUT, voicelive_input
from callbot.local.speech import SpeechDetector
from callbot.local.voicelive.faq import Responder
from callbot.local.voicelive.faq_tools import Answer
from callbot.local.voicelive.protocol import ProtocolError, message_text
from callbot.local.voicelive.session import ServerSession
from callbot.local.voicelive.tools import FunctionCall, callable_tools

if TYPE_CHECKING:
    from callbot.local.voicelive.standin import Standin

log = logging.getLogger(__name__)

Event = dict[str, Any]
MIN_UNRECOGNISED_SPEECH_MS = 600  # shorter segments with no words are noise: no reply
MAX_MANUAL_BUFFER_BYTES = 60 * 48000  # one minute at 24 kHz: the uncommitted buffer when turn detection is off


class LocalAgent:
    """Plays the model for one session of the stand-in (see the module docstring)."""

    def __init__(self, session: ServerSession, standin: Standin) -> None:
        self.session = session
        self.standin = standin
        self._detector: SpeechDetector | None = None
        self._detector_key: tuple[Any, ...] | None = None
        self._offset_ms = 0
        self._speech_start_ms = 0
        self._manual = bytearray()
        self._reply: asyncio.Task[None] | None = None
        self._preparing = 0  # turn replies between speech stop and their response.created
        self._transcribing: set[asyncio.Task[str]] = set()
        self._responder = Responder("")
        self._configure()

    # -- configuration -------------------------------------------------------------------------------------------

    @property
    def _turn(self) -> dict[str, Any] | None:
        turn = self.session.config.get("turn_detection")
        return turn if isinstance(turn, dict) else None

    @property
    def _input_rate(self) -> int:
        fmt = str(self.session.config.get("input_audio_format", "pcm16"))
        return voicelive_input(fmt, int(self.session.config.get("input_audio_sampling_rate", 24000))).sample_rate

    def _configure(self) -> None:
        instructions = str(self.session.config.get("instructions") or "")
        if instructions != self._responder.instructions:
            self._responder = Responder(instructions)
        turn = self._turn
        if turn is None:
            self._detector, self._detector_key = None, None
            return
        key = (self._input_rate, self.session.config.get("input_audio_format"), turn.get("threshold", 0.5),
               turn.get("prefix_padding_ms", 300), turn.get("silence_duration_ms", 500))  # fmt: skip
        if key == self._detector_key:
            return
        self._detector_key = key
        self._offset_ms = int(self.session.input_ms)
        self._detector = SpeechDetector(
            self._input_rate,
            threshold=float(key[2] if key[2] is not None else 0.5),
            prefix_padding_ms=int(key[3] if key[3] is not None else 300),
            silence_duration_ms=max(1, int(key[4] if key[4] is not None else 500)),
        )

    # -- Behaviour -----------------------------------------------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        kind = event["type"]
        if kind == "session.update":
            self._configure()
        elif kind == "input_audio_buffer.append":
            await self._on_audio(self._pcm(self.session.last_appended))
        elif kind == "input_audio_buffer.commit":
            item_id = self.session.conversation.last_id
            audio, self._manual = bytes(self._manual), bytearray()
            if item_id is not None:
                self._start_turn(item_id, audio, speech_ms=None, respond=False)
        elif kind == "input_audio_buffer.clear":
            self._manual.clear()

    async def on_response_create(self, event: Event) -> None:
        if self._preparing:
            raise _busy("a response being prepared")
        if self._transcribing:  # answer the committed turn, not the one before it
            await asyncio.wait(list(self._transcribing))
        params = event.get("response") or {}
        message = params.get("pre_generated_assistant_message")
        if isinstance(message, dict):
            answer = Answer(message_text(message))
        elif results := self._tool_results():
            answer = Answer(self._responder.tool_reply(results))
        else:
            answer = self._responder.answer(self._last_user_text(), callable_tools(self.session.config, params))
        await self._speak(answer, params, wait=False)

    # -- caller audio --------------------------------------------------------------------------------------------

    def _pcm(self, data: bytes) -> bytes:
        fmt = self.session.config.get("input_audio_format")
        if fmt == "g711_ulaw":
            return ulaw_to_pcm16(data)
        if fmt == "g711_alaw":
            return alaw_to_pcm16(data)
        return data[: len(data) // 2 * 2]

    async def _on_audio(self, pcm: bytes) -> None:
        if self._detector is None:
            room = MAX_MANUAL_BUFFER_BYTES - len(self._manual)
            self._manual += pcm[: max(0, room)]
            return
        for vad in self._detector.feed(pcm):
            position = vad.audio_ms + self._offset_ms
            if vad.kind == "speech_started":
                self._speech_start_ms = position
                turn = self._turn or {}
                if turn.get("interrupt_response", True) and self._reply is not None:
                    self._reply.cancel()  # a reply still being prepared is dropped, like a streaming one
                await self.session.speech_started(audio_start_ms=position)
                self.standin.emit(self.session, "speech_started", audio_ms=position)
            else:
                item_id = await self.session.speech_stopped(audio_end_ms=position)
                self.standin.emit(self.session, "speech_stopped", audio_ms=position)
                respond = bool((self._turn or {}).get("create_response", True))
                self._start_turn(item_id, vad.audio or b"", speech_ms=position - self._speech_start_ms,
                                 respond=respond)  # fmt: skip

    def _start_turn(self, item_id: str, audio: bytes, *, speech_ms: int | None, respond: bool) -> None:
        asr: asyncio.Task[str] = self.session.spawn(self._transcribe(item_id, audio))
        self._transcribing.add(asr)
        asr.add_done_callback(self._transcribing.discard)
        asr.add_done_callback(self._log_failure)
        if respond:
            self._preparing += 1
            self._reply = self.session.spawn(self._reply_task(asr, speech_ms))
            self._reply.add_done_callback(self._reply_done)  # runs even if cancelled before it started

    def _reply_done(self, task: asyncio.Task[None]) -> None:
        self._preparing -= 1
        self._log_failure(task)

    def _log_failure(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("session %s: the local agent failed", self.session.id, exc_info=task.exception())

    async def _reply_task(self, asr: asyncio.Task[str], speech_ms: int | None) -> None:
        text = await asyncio.shield(asr)  # an interruption drops the reply, not the transcription
        if not text and speech_ms is not None and speech_ms < MIN_UNRECOGNISED_SPEECH_MS:
            return
        await self._speak(self._responder.answer(text, callable_tools(self.session.config, {})), {}, wait=True)

    async def _transcribe(self, item_id: str, audio: bytes) -> str:
        text = await self.standin.transcribe(self._responder.instructions, audio, self._input_rate)
        if self.session.config.get("input_audio_transcription"):
            await self.session.transcription_completed(item_id, text)
        else:
            self.session.conversation.set_input_transcript(item_id, text)
        self.standin.emit(self.session, "heard", text)
        log.debug("session %s: heard %r", self.session.id, text)
        return text

    def _tool_results(self) -> list[tuple[str, str]]:
        """``(tool name, output)`` of the function call outputs after the conversation's last message item."""
        results: list[tuple[str, str]] = []
        for item in reversed(self.session.conversation.items.values()):
            if item.get("type") == "message":
                break
            if item.get("type") == "function_call_output":
                call = self.session.conversation.function_call(str(item.get("call_id")))
                results.append((str((call or {}).get("name", "function")), str(item.get("output", ""))))
        return results[::-1]

    def _last_user_text(self) -> str:
        for item in reversed(self.session.conversation.items.values()):
            if item.get("role") == "user":
                return message_text(item)
        return ""

    # -- speaking ------------------------------------------------------------------------------------------------

    async def _speak(self, answer: Answer, params: dict[str, Any], *, wait: bool) -> None:
        """Synthesise the answer's speech and stream it as a response, its function calls after it. ``wait``: let
        a response in progress finish first (turn replies); else one in progress is an error (``response.create``)."""
        text = answer.speech
        fmt = str(params.get("output_audio_format") or self.session.config["output_audio_format"])
        modalities = params.get("modalities") or self.session.config.get("modalities") or ["audio"]
        audio = await asyncio.to_thread(self._synthesize, text, fmt) if "audio" in modalities and text else b""
        while wait and self.session.active_response is not None:
            await self.session.active_response.done.wait()
        if self.session.active_response is not None:
            raise _busy(self.session.active_response.response_id)
        calls = tuple(FunctionCall(c.name, c.arguments_json) for c in answer.calls)
        await self.session.start_response(text=text, audio=audio, chunk_ms=self.standin.chunk_ms,
                                          realtime_factor=self.standin.realtime_factor, output_audio_format=fmt,
                                          items=1 if text or not calls else 0, calls=calls)  # fmt: skip
        out = VOICELIVE_OUTPUT.get(fmt, PCM24K)
        if text:
            self.standin.emit(self.session, "reply", text, audio_ms=int(len(audio) / out.bytes_per_ms))
        for call in calls:
            self.standin.emit(self.session, "tool_call", call.name)
            log.debug("session %s: calls %s %s", self.session.id, call.name, call.arguments)

    def _synthesize(self, text: str, fmt: str) -> bytes:
        """The reply's audio in the output format. Blocking: runs in a worker thread (espeak-ng releases the GIL)."""
        pcm = self.standin.speaker.synthesize(text, VOICELIVE_OUTPUT.get(fmt, PCM24K).sample_rate)
        return pcm16_to_ulaw(pcm) if fmt == "g711_ulaw" else pcm16_to_alaw(pcm) if fmt == "g711_alaw" else pcm


def _busy(what: str) -> ProtocolError:
    return ProtocolError(
        "conversation_already_has_active_response",
        f"Conversation already has an active response in progress: {what}. Wait until the response is "
        "finished before creating a new one.",
    )
