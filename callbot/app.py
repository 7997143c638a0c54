"""HTTP and WebSocket routes (FastAPI). Call logic lives in `calls`, `bridge` and `acs`; this module only routes and
guards.

The webhook and the callbacks take the bare request: they read their query and headers from it and stream their body
themselves, capped at 1 MiB before any parsing. FastAPI validates nothing on them, so every reply is callbot's own
(never an automatic 422); routing errors (404, 405) keep Starlette's plain-text bodies. The media socket is a FastAPI
WebSocket route whose ASGI receive and send pass through its guard (`MediaSocketRoute`). With `CALLBOT_API_DOCS` on
(the default in local development mode), `/docs` and `/openapi.json` describe the HTTP routes (`callbot.api_docs`);
off, both are 404.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.websockets import WebSocket

from callbot.acs import events
from callbot.acs.auth import TokenRejected
from callbot.api_docs import APP_DOC, CALLBACK_DOC, HEALTHZ_DOC, INCOMING_CALL_DOC, METRICS_DOC, READYZ_DOC
from callbot.calls import Call
from callbot.config import Settings
from callbot.logs import install_log_redaction
from callbot.security import check_webhook_secret
from callbot.services import Services
from callbot.socket_guard import (
    MEDIA_MAX_MESSAGE_BYTES,
    WS_POLICY_VIOLATION,
    WS_TRY_AGAIN_LATER,
    MediaSocketRoute,
    _media_guard,
    _MediaGuard,
)

__all__ = ["MEDIA_MAX_MESSAGE_BYTES", "create_app"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MEDIA_EXTRA_SOCKETS = 10  # open media sockets (handshakes included) allowed beyond CALLBOT_MAX_CONCURRENT_CALLS


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


class BodyTooLarge(Exception):
    pass


def _too_large(svc: Services, what: str) -> Response:
    svc.metrics.inc("body_too_large")
    log.warning("%s: request body over %d bytes refused (413)", what, MAX_BODY_BYTES)
    return _error(413, "request body too large")


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge
    return bytes(body)


def _services(request: Request | WebSocket) -> Services:
    services: Services = request.app.state.services
    return services


# -- incoming call (Event Grid) --------------------------------------------------------------------------------

async def incoming_call(request: Request) -> Response:
    svc = _services(request)
    if not check_webhook_secret(svc.settings.callbot_webhook_secret, request.query_params.get("secret")):
        svc.metrics.inc("webhook_rejected")
        log.warning("incoming-call webhook: rejected (%s)", "no CALLBOT_WEBHOOK_SECRET configured"
                    if svc.settings.callbot_webhook_secret is None else "missing or wrong secret")
        return _error(401, "unauthorized")
    if svc.eventgrid_auth is not None:
        try:
            await svc.eventgrid_auth.verify(request.headers.get("authorization"))
        except TokenRejected as exc:
            svc.metrics.inc("webhook_rejected")
            log.warning("incoming-call webhook: Event Grid token rejected (%s)", exc.reason)
            return _error(401, "unauthorized")
    try:
        grid_events = events.parse_event_grid(await _read_body(request))
    except BodyTooLarge:
        return _too_large(svc, "incoming-call webhook")
    except events.EventParseError as exc:
        svc.metrics.inc("bad_requests")
        log.warning("incoming-call webhook: bad request (%s)", exc)
        return _error(400, str(exc))
    answered = 0
    for ev in grid_events:
        if isinstance(ev, events.SubscriptionValidation):
            log.info("Event Grid subscription validation handshake answered")
            return _json({"validationResponse": ev.validation_code})
        if isinstance(ev, events.IncomingCall):
            svc.take_call(ev)
            answered += 1
        else:
            log.info("incoming-call webhook: event type %s acknowledged and ignored", ev.event_type)
    return _json({"accepted": answered})


# -- mid-call callbacks (ACS) ----------------------------------------------------------------------------------

async def callback(request: Request) -> Response:
    svc = _services(request)
    call_id = request.path_params["call_id"]
    try:
        svc.signer.verify(call_id, request.query_params.get("token"), purpose="callback", now=time.time())
        await svc.acs_verifier.verify(request.headers.get("authorization"))
    except TokenRejected as exc:
        svc.metrics.inc("callback_rejected")
        log.warning("callback for %r rejected: %s", call_id[:40], exc.reason)
        return _error(401, "unauthorized")
    try:
        body = await _read_body(request)
        call_events = events.parse_callback_events(body)
    except BodyTooLarge:
        return _too_large(svc, f"callback for call {call_id[:40]}")
    except events.EventParseError as exc:
        svc.metrics.inc("bad_requests")
        log.warning("call %s: bad callback (%s)", call_id, exc)
        return _error(400, str(exc))
    call = svc.registry.get(call_id)
    if call is not None and call.recorder is not None:
        call.recorder.callback(orjson.loads(body))
    for ev in call_events:
        svc.on_call_event(call_id, call, ev)
    return _json({"ok": True})


# -- media stream (ACS WebSocket) ------------------------------------------------------------------------------
#
# Every refusal is sent the same way: the handshake is accepted, then the socket is closed at once with a close code
# (1008 policy violation: bad token, unknown or already connected call; 1013 try again later: too many sockets), so
# the client always sees a WebSocket close code rather than an HTTP 403. Nothing is read from a refused socket.
# Once bridged, the socket is guarded: a message over MEDIA_MAX_MESSAGE_BYTES closes it with 1009, more messages
# than the token bucket allows (MEDIA_MESSAGES_PER_S, burst MEDIA_MESSAGE_BURST) close it with 1008. Each refusal
# and violation increments a counter at /metrics and logs one line (never the token).


async def media(ws: WebSocket, call_id: str, guard: Annotated[_MediaGuard, Depends(_media_guard)]) -> None:
    svc = guard.svc
    svc.sockets += 1
    try:
        call: Call | None = None
        code = WS_POLICY_VIOLATION
        try:
            if svc.sockets > svc.settings.callbot_max_concurrent_calls + MEDIA_EXTRA_SOCKETS:
                code = WS_TRY_AGAIN_LATER
                raise TokenRejected("too many media sockets")
            svc.signer.verify(call_id, ws.query_params.get("token"), purpose="media", now=time.time())
            await svc.acs_verifier.verify(ws.headers.get("authorization"))
            call = svc.registry.get(call_id)
            if (call is not None and call.ended) or svc.registry.has_ended(call_id):
                raise TokenRejected("ended call")
            if call is not None and (call.media_connected or call.bridge is None):
                raise TokenRejected("media already connected for this call")
            refusal = svc.registry.admission_refusal() if call is None else None
            if refusal is not None:
                code = WS_TRY_AGAIN_LATER
                raise TokenRejected(f"cannot take over the call: {refusal}")
        except TokenRejected as exc:
            svc.metrics.inc("media_rejected")
            log.warning("media socket for %r refused (%d): %s", call_id[:40], code, exc.reason)
            await ws.accept()
            await ws.close(code=code)
            return
        if call is None:
            # Valid tokens (signed with this deployment's key at answer time) for a call answered by another
            # replica: the ingress sent its media here, so this replica takes the call over.
            call = svc.adopt_call(call_id, ws.headers.get("x-ms-call-connection-id"))
        await ws.accept()
        await svc.attach_media(call, ws)
        if guard.violation is not None:  # a limit cut the media: end the call rather than leave dead air
            await svc.hang_up(call, f"media closed ({guard.violation})")
    finally:
        svc.sockets -= 1


# -- health --------------------------------------------------------------------------------------------------

async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    svc = _services(request)
    problems = svc.readiness_problems()
    if problems:
        return _json({"ready": False, "problems": problems}, 503)
    return _json({"ready": True, "calls": len(svc.registry)})


async def metrics(request: Request) -> Response:
    return PlainTextResponse(_services(request).metrics.render(), media_type="text/plain; version=0.0.4")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own reply to routing errors (404 unknown path, 405 wrong method): plain text, not FastAPI's
    JSON, so that every route and refusal answers exactly as before the move to FastAPI."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)


def create_app(settings: Settings) -> FastAPI:
    install_log_redaction()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Services(settings) as services:
            app.state.services = services
            yield

    async def on_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal error"}, status_code=500)

    docs = settings.api_docs
    app = FastAPI(
        **APP_DOC,
        openapi_url="/openapi.json" if docs else None,  # None: neither the schema nor the docs exist (404)
        docs_url="/docs" if docs else None,
        redoc_url=None,
        lifespan=lifespan,
        exception_handlers={500: on_error, HTTPException: _http_error},
        routes=[MediaSocketRoute("/ws/media/{call_id}", media)],
    )
    app.add_api_route("/api/incoming-call", incoming_call, methods=["POST"], **INCOMING_CALL_DOC)
    app.add_api_route("/api/callbacks/{call_id}", callback, methods=["POST"], **CALLBACK_DOC)
    for path, endpoint, doc in (("/healthz", healthz, HEALTHZ_DOC), ("/readyz", readyz, READYZ_DOC),
                                ("/metrics", metrics, METRICS_DOC)):
        app.add_api_route(path, endpoint, methods=["GET"], **doc)
        # HEAD too, as Starlette's GET routes answer it (some probes use it); one operation in the docs
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
    from callbot.twilio import routes as twilio_routes  # always routed: without credentials they refuse everything

    app.router.routes.extend(twilio_routes.routes())
    if settings.web_phone:
        from callbot.web import routes as web_routes

        app.router.routes.extend(web_routes.routes())
    if settings.offline:  # the built-in stand-in plays Voice Live: what it heard, for `callbot dial` (never else)
        from callbot.local.caller import heard

        app.router.routes.extend(heard.routes())
    return app
