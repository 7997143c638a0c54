"""A local server speaking the Azure AI Voice Live realtime WebSocket protocol.

The real ``azure-ai-voicelive`` SDK connects to it unchanged (``AZURE_VOICELIVE_ENDPOINT=server.url``).
The server core does the protocol bookkeeping the service does (session config, validation errors,
input audio, conversation items, cancel, truncate with per-item audio accounting); *what the model says*
is pluggable: a :class:`Behaviour` per session decides, and tests can play the model through the
scripting helpers of :class:`ServerSession` (``start_response``, ``speech_started``, ...).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from types import TracebackType
from typing import Any

from aiohttp import web

from callbot.local.voicelive.protocol import message_text, tone
from callbot.local.voicelive.response import ResponseHandle
from callbot.local.voicelive.session import Behaviour, BehaviourFactory, ServerSession

__all__ = ["Behaviour", "DefaultBehaviour", "ResponseHandle", "ServerSession", "VoiceLiveServer"]

logger = logging.getLogger(__name__)

Event = dict[str, Any]
REALTIME_PATH = "/voice-live/realtime"
MS_PER_CHARACTER = 60
_UNAUTHORIZED = json.dumps({  # the service's 401 body, as text: a constant that cannot be changed by accident
    "error": {
        "code": "401",
        "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
        "a valid key for an active subscription and use a correct regional API endpoint for your resource.",
    }
})


class DefaultBehaviour:
    """Says the text of ``pre_generated_assistant_message``, else "OK", as a tone of 60 ms per character."""

    def __init__(self, session: ServerSession) -> None:
        self.session = session

    async def on_event(self, event: Event) -> None:
        return None

    async def on_response_create(self, event: Event) -> None:
        params = event.get("response") or {}
        message = params.get("pre_generated_assistant_message")
        text = message_text(message) if isinstance(message, dict) else "OK"
        fmt = params.get("output_audio_format") or self.session.config["output_audio_format"]
        modalities = params.get("modalities") or self.session.config["modalities"]
        audio = tone(MS_PER_CHARACTER * len(text), fmt) if "audio" in modalities else b""
        await self.session.start_response(text=text, audio=audio, output_audio_format=fmt)


class VoiceLiveServer:
    """aiohttp server for ``/voice-live/realtime``; every WebSocket becomes a :class:`ServerSession`.

    ``api_key``: required in the ``api-key`` header (or any bearer token with ``accept_bearer``); ``None``
    accepts everyone. ``session_defaults`` override the session reported in ``session.created``.
    ``keep_history=False`` (long-running stand-in): sessions keep no event/audio records and leave
    ``sessions`` when they end; ``ServerSession.wait_for`` is then unavailable.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        accept_bearer: bool = False,
        behaviour_factory: BehaviourFactory | None = None,
        session_defaults: dict[str, Any] | None = None,
        keep_history: bool = True,
    ) -> None:
        self._api_key = api_key
        self._accept_bearer = accept_bearer
        self._behaviour_factory: BehaviourFactory = behaviour_factory or DefaultBehaviour
        self._session_defaults = dict(session_defaults or {})
        self._keep_history = keep_history
        self.sessions: list[ServerSession] = []
        self._sessions_changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._host = "127.0.0.1"

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("server not started")
        return f"http://{self._host}:{self._port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application()
        app.router.add_get(REALTIME_PATH, self._handle)
        app.router.add_get("/{prefix:.+}" + REALTIME_PATH, self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self._host, self._port = host, self._runner.addresses[0][1]
        logger.info("Voice Live test server listening on %s", self.url)

    async def stop(self) -> None:
        await asyncio.gather(*(s.close(1001) for s in self.sessions if not s.closed.is_set()),
                             return_exceptions=True)  # fmt: skip
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> VoiceLiveServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def wait_for_session(self, index: int = 0, *, timeout: float = 5.0) -> ServerSession:  # noqa: ASYNC109
        """The ``index``-th session (0 = first connection), waiting for it to connect if needed."""
        async with asyncio.timeout(timeout), self._sessions_changed:
            await self._sessions_changed.wait_for(lambda: len(self.sessions) > index)
        return self.sessions[index]

    def _authorized(self, request: web.Request) -> bool:
        if self._api_key is None:
            return True
        key = request.headers.get("api-key")
        if key is not None and hmac.compare_digest(key.encode(), self._api_key.encode()):
            return True
        auth = request.headers.get("Authorization", "")
        return self._accept_bearer and auth.startswith("Bearer ") and len(auth) > len("Bearer ")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.Response(text=_UNAUTHORIZED, status=401, content_type="application/json")
        if "api-version" not in request.query:
            return web.json_response({"error": {"code": "MissingApiVersionParameter",
                                                "message": "The api-version query parameter is required."}},
                                     status=400)  # fmt: skip
        if "model" not in request.query and not {"agent-name", "agent-project-name"} <= request.query.keys():
            return web.json_response({"error": {"code": "BadRequest", "message": "A model or an agent is "
                                                "required (model, or agent-name and agent-project-name)."}},
                                     status=400)  # fmt: skip
        ws = web.WebSocketResponse(timeout=2.0, max_msg_size=16 * 1024 * 1024)
        if not ws.can_prepare(request).ok:
            return web.json_response({"error": {"code": "BadRequest", "message": "WebSocket expected."}}, status=400)
        session = ServerSession(
            request, ws, self._behaviour_factory, self._session_defaults, keep_history=self._keep_history
        )
        async with self._sessions_changed:
            self.sessions.append(session)
            self._sessions_changed.notify_all()
        try:
            await ws.prepare(request)
            logger.debug("session %s connected (%s)", session.id, session.query.get("model", "agent"))
            await session.run()
        finally:
            session.closed.set()
            if not self._keep_history:
                self.sessions.remove(session)
        return ws
