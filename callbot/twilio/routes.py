"""Twilio's routes: the voice webhook, the call status callback and the Media Streams socket.

- `POST /api/twilio/voice` (the number's "A call comes in" webhook, HTTP POST): `X-Twilio-Signature` is checked with
  the `twilio` package's `RequestValidator` against the URL Twilio called, `CALLBOT_PUBLIC_URL` + path + query (what
  Twilio signs, whatever proxy sits in between), and the form's `AccountSid` must be `TWILIO_ACCOUNT_SID`. Anything
  else: 403. Busy (the call cap, draining): TwiML `<Reject reason="busy"/>`. Else the call is admitted and the answer
  is `<Connect><Stream url="wss://<public host>/ws/twilio/{call_id}">` with the per-call token as a `<Parameter>`
  (Twilio drops query strings from stream URLs).
- `POST /api/twilio/status` (optional, the number's "Call status changes" callback): verified the same way; a final
  status (completed, busy, failed, no-answer, canceled) ends the call here.
- `WS /ws/twilio/{call_id}`: behind the socket guard of every call socket; the token is checked at `start`
  (`callbot.twilio.calls.serve_stream`).

Without `TWILIO_ACCOUNT_SID` and `TWILIO_AUTH_TOKEN` every route refuses (403; the socket closes with 1008), with
one log line per request.
"""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import parse_qsl, urlsplit

from fastapi import Depends
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.websockets import WebSocket
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from callbot.services import Services
from callbot.socket_guard import WS_POLICY_VIOLATION, WS_TRY_AGAIN_LATER, MediaSocketRoute, _media_guard, _MediaGuard
from callbot.twilio import calls

log = logging.getLogger(__name__)

VOICE_PATH = "/api/twilio/voice"
STATUS_PATH = "/api/twilio/status"
MAX_FORM_BYTES = 64 * 1024  # Twilio's webhook forms are a few hundred bytes
MAX_EXTRA_SOCKETS = 10  # as for ACS media sockets: handshakes beyond CALLBOT_MAX_CONCURRENT_CALLS
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
TWIML = "text/xml; charset=utf-8"


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _services(request: Request | WebSocket) -> Services:
    services: Services = request.app.state.services
    return services


def _twiml(response: VoiceResponse) -> Response:
    return Response(str(response), media_type=TWIML)


async def _verified_form(svc: Services, request: Request, path: str) -> ImmutableMultiDict[str, str]:
    """The webhook's form once its signature checks out; `_Refused` otherwise (nothing is parsed before the size
    check, nothing is acted on before the signature check)."""
    settings = svc.settings
    if not settings.twilio or settings.twilio_auth_token is None:
        raise _Refused(403, "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set")
    if not settings.callbot_public_url:
        raise _Refused(403, "CALLBOT_PUBLIC_URL is not set: the signature cannot be checked")
    signature = request.headers.get("x-twilio-signature")
    if not signature:
        raise _Refused(403, "no X-Twilio-Signature")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_FORM_BYTES:
        raise _Refused(413, "request body too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise _Refused(413, "request body too large")
    try:
        form = ImmutableMultiDict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError:
        raise _Refused(400, "the form is not UTF-8") from None
    query = request.url.query
    url = settings.callbot_public_url + path + (f"?{query}" if query else "")
    validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    if not validator.validate(url, form, signature):
        raise _Refused(403, "wrong X-Twilio-Signature")
    if form.get("AccountSid") != settings.twilio_account_sid:
        raise _Refused(403, "the request is for another Twilio account")
    return form


def _refusal(svc: Services, what: str, exc: _Refused) -> Response:
    svc.metrics.inc("body_too_large" if exc.status == 413 else "twilio_webhook_rejected")
    log.warning("Twilio %s refused (%d): %s", what, exc.status, exc.reason)
    return Response("request body too large" if exc.status == 413 else "forbidden", status_code=exc.status,
                    media_type="text/plain")


def stream_url(public_url: str, call_id: str) -> str:
    """`wss://<public host>/ws/twilio/{call_id}` (`ws://` for an `http://` public URL: local use)."""
    parts = urlsplit(public_url.rstrip("/"))
    return f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}{parts.path}/ws/twilio/{call_id}"


async def voice(request: Request) -> Response:
    svc = _services(request)
    try:
        form = await _verified_form(svc, request, VOICE_PATH)
    except _Refused as exc:
        return _refusal(svc, "voice webhook", exc)
    call_sid = form.get("CallSid", "")
    if not call_sid:
        svc.metrics.inc("bad_requests")
        log.warning("Twilio voice webhook without a CallSid: rejected")
        return _twiml(VoiceResponse().reject(reason="rejected"))
    call = calls.admit(svc, call_sid, form.get("From", ""))
    response = VoiceResponse()
    if call is None:
        response.reject(reason="busy")
        return _twiml(response)
    assert svc.settings.callbot_public_url
    connect = Connect()
    stream = connect.stream(url=stream_url(svc.settings.callbot_public_url, call.call_id))
    stream.parameter(name="token", value=calls.stream_token(svc, call))
    response.append(connect)
    return _twiml(response)


async def status(request: Request) -> Response:
    svc = _services(request)
    try:
        form = await _verified_form(svc, request, STATUS_PATH)
    except _Refused as exc:
        return _refusal(svc, "status callback", exc)
    call_sid, call_status = form.get("CallSid", ""), form.get("CallStatus", "")
    call = calls.find_by_call_sid(svc, call_sid) if call_sid else None
    log.info("Twilio call %s: status %s%s", call_sid[:40], call_status[:20],
             f" (call {call.call_id})" if call is not None else " (not live here)")
    if call is not None and call_status in FINAL_STATUSES:
        svc.registry.finish(call, f"twilio_{call_status.replace('-', '_')}")
    return Response(status_code=204)


async def stream_socket(ws: WebSocket, call_id: str, guard: Annotated[_MediaGuard, Depends(_media_guard)]) -> None:
    svc = guard.svc
    svc.sockets += 1
    try:
        call = svc.registry.get(call_id)
        code, reason = WS_POLICY_VIOLATION, ""
        if not svc.settings.twilio:
            reason = "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set"
        elif svc.sockets > svc.settings.callbot_max_concurrent_calls + MAX_EXTRA_SOCKETS:
            code, reason = WS_TRY_AGAIN_LATER, "too many media sockets"
        elif call is None and svc.registry.has_ended(call_id):
            reason = "the call has ended"
        elif call is not None and (call.ended or call.bridge is None or call.bridge.transport.name != "twilio"):
            reason = "no such Twilio call here"
        elif call is not None and call.media_connected:
            reason = "the call already has its stream"
        await ws.accept()
        if reason:
            svc.metrics.inc("twilio_stream_rejected")
            log.warning("Twilio stream for %r refused (%d): %s", call_id[:40], code, reason)
            await ws.close(code=code)
            return
        if call is None:  # answered by another replica? its start's token decides (checked before anything else)
            call = await calls.adopt_stream(svc, call_id, ws)
            if call is None:
                return
        elif not await calls.serve_stream(svc, call, ws):
            return  # refused: the call waits on for its real stream
        if guard.violation is not None:  # a limit cut the stream: end the call, no dead air
            await calls.hang_up_at_twilio(svc, call, f"media closed ({guard.violation})")
        svc.registry.finish(call, call.bridge.end_reason or "twilio stream ended")
    finally:
        svc.sockets -= 1


def routes() -> list[BaseRoute]:
    return [
        Route(VOICE_PATH, voice, methods=["POST"]),
        Route(STATUS_PATH, status, methods=["POST"]),
        MediaSocketRoute("/ws/twilio/{call_id}", stream_socket),
    ]
