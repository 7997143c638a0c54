"""The web phone's routes: the page, its configuration, the key -> session token exchange, and its socket.

Served only when the web phone is on (`CALLBOT_WEB_PHONE`; on by default in local development mode). Outside local
development mode `CALLBOT_WEB_PHONE_KEY` is required (settings refuse to start without it): the page asks a person
for it and exchanges it at `POST /api/phone/session` for a signed session token that opens one call's socket within
a minute. Key attempts are rate-limited per client address and compared in constant time; the key is never in the
page, a URL, a log or a recording. The socket refuses anything without a valid, unused token, before any audio.
"""

from __future__ import annotations

import logging
import secrets
import time
from importlib import resources
from types import MappingProxyType
from typing import Annotated, Any

import orjson
from fastapi import Depends
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.websockets import WebSocket

from callbot.acs.auth import TokenRejected
from callbot.services import Services
from callbot.socket_guard import (
    WS_POLICY_VIOLATION,
    WS_TRY_AGAIN_LATER,
    MediaSocketRoute,
    _media_guard,
    _MediaGuard,
)
from callbot.web.access import SESSION_TOKEN_TTL_S, key_ok
from callbot.web.adapter import MEDIA
from callbot.web.calls import serve_web_call

log = logging.getLogger(__name__)

MAX_SESSION_BODY_BYTES = 4096
STATIC = frozenset({"phone.html", "phone.js", "phone.css", "capture-worklet.js", "playback-worklet.js"})
CONTENT_TYPES = MappingProxyType({".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                                  ".css": "text/css; charset=utf-8"})
# The page loads nothing from elsewhere; its socket goes back to this origin.
PAGE_HEADERS = MappingProxyType({
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
})


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def _services(request: Request | WebSocket) -> Services:
    services: Services = request.app.state.services
    return services


def _static(name: str) -> Response:
    if name not in STATIC:
        return Response("not found", status_code=404, media_type="text/plain")
    try:
        body = resources.files("callbot.web").joinpath("static", name).read_bytes()
    except (FileNotFoundError, OSError):
        return Response("not found", status_code=404, media_type="text/plain")
    suffix = name[name.rfind("."):]
    return Response(body, media_type=CONTENT_TYPES.get(suffix, "application/octet-stream"), headers=dict(PAGE_HEADERS))


async def page(request: Request) -> Response:
    return _static("phone.html")


async def asset(request: Request) -> Response:
    return _static(str(request.path_params["name"]))


async def config(request: Request) -> Response:
    svc = _services(request)
    return _json({"key_required": svc.settings.callbot_web_phone_key is not None,
                  "sample_rate": MEDIA.sample_rate, "frame_ms": 20})


async def session(request: Request) -> Response:
    """`{"key": ...}` -> a session token for one call. 401 wrong key, 429 too many attempts, 503 busy."""
    svc = _services(request)
    client = request.client.host if request.client is not None else "?"
    wait = svc.web_attempts.take(client, time.monotonic())
    if wait > 0:
        svc.metrics.inc("web_key_rate_limited")
        log.warning("web phone: key attempts from %s rate-limited", client)
        return _json({"error": "too many attempts"}, 429, {"Retry-After": str(int(wait) + 1)})
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SESSION_BODY_BYTES:
            return _json({"error": "request body too large"}, 413)
    try:
        data = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        svc.metrics.inc("bad_requests")
        return _json({"error": "expected a JSON object"}, 400)
    if not key_ok(svc.settings.callbot_web_phone_key, data.get("key")):
        svc.metrics.inc("web_key_rejected")
        log.warning("web phone: wrong key from %s", client)
        return _json({"error": "wrong key"}, 401)
    refusal = svc.registry.admission_refusal()
    if refusal is not None:
        svc.metrics.inc("calls_rejected")
        log.warning("web phone call refused: %s", refusal)
        return _json({"error": "busy"}, 503)
    call_id = secrets.token_hex(16)
    token = svc.signer.issue(call_id, purpose="web", expires_at=time.time() + SESSION_TOKEN_TTL_S)
    return _json({"call_id": call_id, "token": token, "socket": f"/ws/phone/{call_id}?token={token}",
                  "expires_in": int(SESSION_TOKEN_TTL_S)})


async def phone_socket(ws: WebSocket, call_id: str, guard: Annotated[_MediaGuard, Depends(_media_guard)]) -> None:
    svc = guard.svc
    svc.sockets += 1
    try:
        code = WS_POLICY_VIOLATION
        try:
            svc.signer.verify(call_id, ws.query_params.get("token"), purpose="web", now=time.time())
            if svc.registry.get(call_id) is not None or svc.registry.has_ended(call_id):
                raise TokenRejected("token already used")
            refusal = svc.registry.admission_refusal()
            if refusal is not None:
                code = WS_TRY_AGAIN_LATER
                raise TokenRejected(refusal)
        except TokenRejected as exc:
            svc.metrics.inc("web_rejected")
            log.warning("web phone socket for %r refused (%d): %s", call_id[:40], code, exc.reason)
            await ws.accept()
            await ws.close(code=code)
            return
        await ws.accept()
        await serve_web_call(svc, call_id, ws)
    finally:
        svc.sockets -= 1


def routes() -> list[BaseRoute]:
    return [
        Route("/phone", page, methods=["GET"]),
        Route("/phone/static/{name}", asset, methods=["GET"]),
        Route("/phone/config", config, methods=["GET"]),
        Route("/api/phone/session", session, methods=["POST"]),
        MediaSocketRoute("/ws/phone/{call_id}", phone_socket),
    ]
