"""The built-in offline Voice Live stand-in: the local protocol server with offline speech behind it.

``callbot serve`` without ``AZURE_VOICELIVE_ENDPOINT`` and ``callbot demo`` run it in-process on a free loopback
port; the real ``azure-ai-voicelive`` SDK connects to it unchanged. Per session, :class:`~callbot.local.voicelive.agent.
LocalAgent` detects speech (webrtcvad, with the session's threshold / padding / silence settings), recognises it
(pocketsphinx with a phrase model built from the instructions, in a child process:
:mod:`callbot.local.speech.asr_worker` says why), answers with the deterministic FAQ responder of
:mod:`callbot.local.voicelive.faq` (not an LLM) and speaks (espeak-ng).

Contract used by :mod:`callbot.services`: ``standin = await start_standin(settings)``, then ``standin.url`` (the
endpoint), ``standin.credential`` (an ``AzureKeyCredential`` the stand-in accepts) and ``await standin.stop()``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from azure.core.credentials import AzureKeyCredential

from callbot.config import Settings
from callbot.local.voicelive.server import ServerSession, VoiceLiveServer

try:
    from callbot.local.speech import Speaker
    from callbot.local.speech.asr_worker import AsrWorker
    from callbot.local.voicelive.agent import LocalAgent
    from callbot.local.voicelive.faq import caller_phrases
except ImportError as exc:  # webrtcvad, pocketsphinx, espeak-ng
    raise ImportError(f"the offline Voice Live stand-in needs the 'local' extra: pip install 'callbot[local]' "
                      f"({exc.name or exc} is missing), or set AZURE_VOICELIVE_ENDPOINT") from exc

log = logging.getLogger(__name__)

BOT_VOICE = ("en-us", 170, 35)
"""The bot's espeak voice, words per minute and pitch: lower than the simulated caller's, and recognised
exactly by the phrase recogniser (measured: other variants such as ``+f3`` lose words)."""
StandinEventKind = Literal["speech_started", "speech_stopped", "heard", "reply", "tool_call"]


@dataclass(frozen=True)
class StandinEvent:
    """Something a stand-in session did, for observers (the demo): ``at`` is ``time.monotonic()``."""

    at: float
    session_id: str
    kind: StandinEventKind
    text: str = ""
    audio_ms: int | None = None


Listener = Callable[[StandinEvent], None]


class Standin:
    """The offline Voice Live service (start it, or use it as an async context manager); see the module docstring.

    ``realtime_factor``: pacing of response audio deltas (0.5: twice as fast as real time, as the service
    streams ahead of playback). ``accept_bearer``: also accept any ``Authorization: Bearer`` token (the SDK's
    Entra path); the API key is always accepted.
    """

    def __init__(
        self,
        instructions: str = "",
        *,
        api_key: str | None = None,
        accept_bearer: bool = False,
        realtime_factor: float = 0.5,
        chunk_ms: int = 100,
        speaker: Speaker | None = None,
        keep_history: bool = False,
    ) -> None:
        self.instructions = instructions
        self.credential = AzureKeyCredential(api_key or secrets.token_urlsafe(32))
        self.realtime_factor = realtime_factor
        self.chunk_ms = chunk_ms
        self.speaker = speaker or Speaker(BOT_VOICE[0], rate_wpm=BOT_VOICE[1], pitch=BOT_VOICE[2])
        self.server = VoiceLiveServer(
            api_key=self.credential.key,
            accept_bearer=accept_bearer,
            behaviour_factory=self._agent,
            keep_history=keep_history,
        )
        self.asr = AsrWorker()
        self._listeners: list[Listener] = []

    def _agent(self, session: ServerSession) -> LocalAgent:
        return LocalAgent(session, self)

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        await self.server.start(host, port)
        try:  # warm up: the first call should not wait for the worker process or the phrase model
            await self.transcribe(self.instructions, b"", 16000)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self.server.stop()
        await self.asr.stop()

    async def __aenter__(self) -> Standin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def transcribe(self, instructions: str, pcm16: bytes, sample_rate: int) -> str:
        """Recognise one caller turn with the phrase model of ``instructions``, in the recognition process
        (requests are answered in the order they were made).
        Raises :class:`~callbot.local.speech.asr_worker.AsrError`."""
        return await self.asr.transcribe(caller_phrases(instructions), pcm16, sample_rate)

    # -- observers -----------------------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def emit(self, session: ServerSession, kind: StandinEventKind, text: str = "", audio_ms: int | None = None
             ) -> None:  # fmt: skip
        event = StandinEvent(time.monotonic(), session.id, kind, text, audio_ms)
        for listener in list(self._listeners):
            listener(event)


async def start_standin(settings: Settings, **options: Any) -> Standin:
    """Start the stand-in on a free loopback port for ``settings`` (its instructions build the vocabulary)."""
    standin = Standin(settings.instructions(), **options)
    await standin.start()
    log.info("offline Voice Live stand-in listening on %s: webrtcvad + pocketsphinx + espeak-ng, replies from "
             "the FAQ in the instructions (a deterministic local responder, not an LLM)", standin.url)
    return standin
