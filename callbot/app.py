"""HTTP and WebSocket routes. Call logic lives in `calls`, `bridge` and `acs`; this module only routes and guards."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from callbot.acs import events
from callbot.acs.auth import TokenRejected
from callbot.calls import Call
from callbot.config import Settings
from callbot.security import check_webhook_secret
from callbot.services import Services

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
CALLBACK_TOKEN_TTL_S = 24 * 3600.0
MEDIA_TOKEN_TTL_S = 120.0


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


class BodyTooLarge(Exception):
    pass


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
        return _error(413, "request body too large")
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
        log.warning("callback for %s rejected: %s", call_id[:40], exc.reason)
        return _error(401, "unauthorized")
    try:
        call_events = events.parse_callback_events(await _read_body(request))
    except BodyTooLarge:
        return _error(413, "request body too large")
    except events.EventParseError as exc:
        svc.metrics.inc("bad_requests")
        log.warning("call %s: bad callback (%s)", call_id, exc)
        return _error(400, str(exc))
    call = svc.registry.get(call_id)
    for ev in call_events:
        svc.on_call_event(call_id, call, ev)
    return _json({"ok": True})


# -- media stream (ACS WebSocket) ------------------------------------------------------------------------------

async def media(ws: WebSocket) -> None:
    svc = _services(ws)
    call_id = ws.path_params["call_id"]
    call: Call | None = None
    try:
        svc.signer.verify(call_id, ws.query_params.get("token"), purpose="media", now=time.time())
        await svc.acs_verifier.verify(ws.headers.get("authorization"))
        call = svc.registry.get(call_id)
        if call is None or call.ended:
            raise TokenRejected("unknown or ended call")
        if call.media_connected:
            raise TokenRejected("media already connected for this call")
        if svc.sockets >= svc.settings.callbot_max_concurrent_calls + 10:
            raise TokenRejected("too many media sockets")
    except TokenRejected as exc:
        svc.metrics.inc("media_rejected")
        log.warning("media socket for %s refused: %s", call_id[:40], exc.reason)
        await ws.close(code=1008)
        return
    call.media_connected = True
    await ws.accept()
    await svc.run_media(call, ws)


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


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with Services(settings) as services:
            app.state.services = services
            yield

    async def on_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal error"}, status_code=500)

    return Starlette(
        routes=[
            Route("/api/incoming-call", incoming_call, methods=["POST"]),
            Route("/api/callbacks/{call_id}", callback, methods=["POST"]),
            WebSocketRoute("/ws/media/{call_id}", media),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={500: on_error},
    )


def public_urls(public_url: str, call_id: str, callback_token: str, media_token: str) -> tuple[str, str]:
    """The callback URL and the media transport URL (`wss://`, or `ws://` for an `http://` public URL)."""
    parts = urlsplit(public_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    base_path = parts.path.rstrip("/")
    callback_url = f"{public_url}/api/callbacks/{call_id}?token={quote(callback_token)}"
    transport_url = f"{scheme}://{parts.netloc}{base_path}/ws/media/{call_id}?token={quote(media_token)}"
    return callback_url, transport_url
