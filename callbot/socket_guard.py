"""The guard in front of every call's WebSocket (ACS media, the web phone): the message size and rate limits,
enforced on the ASGI receive before Starlette's WebSocket sees a message. A violation closes the socket, counts at
/metrics and logs one line (never a token)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from fastapi.routing import APIWebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket

if TYPE_CHECKING:
    from callbot.services import Services

log = logging.getLogger(__name__)

MEDIA_MAX_MESSAGE_BYTES = 2 * 1024 * 1024  # as uvicorn's ws_max_size in `callbot serve`; larger: close 1009
MEDIA_MESSAGES_PER_S = 200.0  # ACS sends 50 per second
MEDIA_MESSAGE_BURST = 200.0  # token bucket: a sustained excess over ~1 s closes the socket with 1008
WS_POLICY_VIOLATION = 1008
WS_MESSAGE_TOO_BIG = 1009
WS_TRY_AGAIN_LATER = 1013
MEDIA_GUARD_SCOPE_KEY = "callbot.media_guard"


class _MediaGuard:
    """The ASGI receive/send of one media socket, with the message size and rate limits enforced."""

    def __init__(self, receive: Receive, send: Send, svc: Services, call_id: str) -> None:
        self._receive = receive
        self._send = send
        self.svc = svc
        self.call_id = call_id
        self.tokens = MEDIA_MESSAGE_BURST
        self.last = time.monotonic()
        self.closed_code: int | None = None  # set when the guard itself closed the socket
        self.violation: int | None = None  # the close code of a limit violation (by the guard or the server)

    async def receive(self) -> Message:
        if self.closed_code is not None:
            return {"type": "websocket.disconnect", "code": self.closed_code}
        message = await self._receive()
        if message["type"] == "websocket.receive":
            payload = message.get("text")
            if payload is None:
                payload = message.get("bytes") or b""
            if len(payload) > MEDIA_MAX_MESSAGE_BYTES:
                return await self._violation("media_message_too_big", WS_MESSAGE_TOO_BIG,
                                             f"a {len(payload)}-byte message")
            now = time.monotonic()
            self.tokens = min(MEDIA_MESSAGE_BURST, self.tokens + (now - self.last) * MEDIA_MESSAGES_PER_S)
            self.last = now
            self.tokens -= 1.0
            if self.tokens < 0:
                return await self._violation("media_rate_limited", WS_POLICY_VIOLATION,
                                             f"over {MEDIA_MESSAGES_PER_S:.0f} messages per second")
        elif message["type"] == "websocket.disconnect" and message.get("code") == WS_MESSAGE_TOO_BIG:
            # the server's own size limit (uvicorn's ws_max_size) closed it before the message reached us
            self.svc.metrics.inc("media_message_too_big")
            self.violation = WS_MESSAGE_TOO_BIG
            log.warning("call %s: media socket closed (1009): a message over the size limit", self.call_id)
        return message

    async def send(self, message: Message) -> None:
        if self.closed_code is None:
            await self._send(message)
        elif message["type"] != "websocket.close":
            raise OSError("media socket closed by its guard")  # starlette turns this into WebSocketDisconnect

    async def _violation(self, counter: str, code: int, what: str) -> Message:
        self.svc.metrics.inc(counter)
        log.warning("call %s: media socket closed (%d): %s", self.call_id, code, what)
        self.closed_code = self.violation = code
        await self._send({"type": "websocket.close", "code": code, "reason": ""})
        return {"type": "websocket.disconnect", "code": code}


class MediaSocketRoute(APIWebSocketRoute):
    """A FastAPI WebSocket route whose socket's ASGI receive and send go through a `_MediaGuard`, so that the guard
    sees every message before Starlette's WebSocket does. The endpoint gets the guard as a dependency."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        services: Services = scope["app"].state.services
        guard = _MediaGuard(receive, send, services, str(scope.get("path_params", {}).get("call_id", "")))
        scope[MEDIA_GUARD_SCOPE_KEY] = guard
        await super().handle(scope, guard.receive, guard.send)


def _media_guard(websocket: WebSocket) -> _MediaGuard:
    guard: _MediaGuard = websocket.scope[MEDIA_GUARD_SCOPE_KEY]
    return guard
