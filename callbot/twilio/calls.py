"""A Twilio call's lifecycle: a call like any other (the registry's cap and drain, a recording, the same bridge and
agent) on the Twilio transport.

1. The voice webhook admits the call (`admit`): the call is created, its bridge starts (the Voice Live session opens
   while Twilio connects the stream, so the greeting is ready), and a watchdog hangs up over REST when no verified
   stream arrives within `STREAM_CONNECT_TIMEOUT_S`.
2. The stream socket (`serve_stream`) reads `connected` and `start` within `START_DEADLINE_S` and checks the per-call
   token Twilio passes back from the TwiML `<Parameter name="token">` (and that the stream belongs to the Twilio call
   the webhook admitted) before the socket is handed to the bridge: nothing from an unverified socket reaches the
   model.
3. The call ends by the caller (`stop`, the socket closing), the agent (REST hang-up: `Status=completed`), a transfer
   (REST update with `<Dial>`: Twilio leaves the stream and dials), a status callback, or shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from callbot import transfers
from callbot.acs.events import mask_phone_number
from callbot.acs.targets import E164, PHONE_PREFIX
from callbot.bridge.actions import TransferError
from callbot.security import TokenRejected
from callbot.socket_guard import WS_TRY_AGAIN_LATER
from callbot.twilio.adapter import TwilioTransport
from callbot.twilio.control import TwilioControlError

if TYPE_CHECKING:
    from callbot.calls import Call
    from callbot.services import Services

log = logging.getLogger(__name__)

START_DEADLINE_S = 5.0  # from accepting the stream socket to a verified `start`
STREAM_CONNECT_TIMEOUT_S = 30.0  # from the webhook's answer to a verified stream; then the call is hung up
STREAM_TOKEN_TTL_S = 120.0  # the token in the TwiML is checked once, when the stream starts
MAX_MESSAGES_BEFORE_START = 8


class StreamRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def admit(svc: Services, call_sid: str, caller: str, *, call_id: str | None = None) -> Call | None:
    """Take a call Twilio offers (None: refused, busy); starts its bridge and stream watchdog. `call_id`: a call
    another replica answered, adopted with its stream (no watchdog: the stream is here)."""
    masked = mask_phone_number(caller) if caller else ("(answered by another replica)" if call_id else "***")
    refusal = svc.registry.admission_refusal()
    if refusal is not None:
        svc.registry.rejected += 1
        svc.metrics.inc("calls_rejected")
        log.warning("Twilio call %s from %s rejected (busy): %s", call_sid, masked, refusal)
        return None
    call = svc.registry.create(caller=masked, call_id=call_id)
    call.caller_id = caller  # personal data: the operator's tools only
    call.correlation_id = call_sid
    svc.metrics.inc("calls")
    svc.metrics.inc("calls_twilio")
    log.info("call %s: incoming Twilio call %s from %s", call.call_id, call_sid, masked)
    svc._open_recorder(call, transport="twilio")
    if call.recorder is not None:
        call.recorder.rest("twilio_connect", {"call_sid": call_sid})
    transport = TwilioTransport(call.call_id, svc.settings.callbot_twilio_model_audio)

    async def hang_up(reason: str) -> None:
        await hang_up_at_twilio(svc, call, reason)

    async def transfer(reason: str) -> None:
        await transfer_at_twilio(svc, call, reason)

    offer_transfer = svc.settings.callbot_transfer_target is not None and svc.twilio is not None
    svc._start_bridge(call, transport=transport, on_hang_up=hang_up, on_transfer=transfer if offer_transfer else None)
    if call_id is None:
        svc.registry.spawn(_watch_stream(svc, call), call, name=f"twilio-stream-{call.call_id}")
    return call


def stream_token(svc: Services, call: Call) -> str:
    return svc.signer.issue(call.call_id, purpose="twilio", expires_at=time.time() + STREAM_TOKEN_TTL_S)


async def _watch_stream(svc: Services, call: Call) -> None:
    try:
        async with asyncio.timeout(STREAM_CONNECT_TIMEOUT_S):
            await call.answered.wait()
    except TimeoutError:
        if await _live_elsewhere(svc, call):
            log.info("call %s: the Twilio stream went to another replica; releasing this one's session", call.call_id)
            svc.registry.finish(call, "media_elsewhere")
            return
        log.error("call %s: no verified Twilio stream within %.0f s; hanging up", call.call_id,
                  STREAM_CONNECT_TIMEOUT_S)
        await hang_up_at_twilio(svc, call, "media_timeout")
        svc.registry.finish(call, "media_timeout")


async def _live_elsewhere(svc: Services, call: Call) -> bool:
    """Whether the call is in progress at Twilio although its stream never came here: with `<Connect><Stream>`
    Twilio ends the call when the stream cannot connect, so a live call's stream is on another replica (adopted)."""
    if svc.twilio is None or not call.correlation_id:
        return False
    try:
        status: str = await svc.twilio.status(call.correlation_id)
    except TwilioControlError as exc:
        log.warning("call %s: Twilio call status unknown (%s)", call.call_id, exc)
        return False
    return status == "in-progress"


async def hang_up_at_twilio(svc: Services, call: Call, reason: str) -> None:
    """End the Twilio call (`Status=completed`), unless it was transferred; REST errors are logged, not raised."""
    if call.transfer == "accepted":
        log.info("call %s: not hanging up (%s): the call was transferred", call.call_id, reason)
        return
    if call.recorder is not None:
        call.recorder.rest("hang_up", {"reason": reason})
    if svc.twilio is None or not call.correlation_id:
        return
    try:
        await svc.twilio.hang_up(call.correlation_id)
    except TwilioControlError as exc:
        log.error("call %s: Twilio hang-up failed: %s", call.call_id, exc)


async def transfer_at_twilio(svc: Services, call: Call, reason: str) -> None:
    """Hand the call to `CALLBOT_TRANSFER_TARGET` (E.164) by new TwiML; `TransferError` when that cannot be done.
    Twilio has no accepted callback: a successful update is the outcome (the stream ends as Twilio dials)."""
    target = svc.settings.callbot_transfer_target
    if target is None or svc.twilio is None or not call.correlation_id:
        raise TransferError("transfer to a person is not available on this line")
    transfers.check_transferable(call)
    number = target.removeprefix(PHONE_PREFIX)
    if not E164.fullmatch(number):
        log.error("call %s: CALLBOT_TRANSFER_TARGET is an ACS id, which Twilio cannot dial", call.call_id)
        raise TransferError("the transfer target is not a phone number this line can dial")
    twilio, call_sid = svc.twilio, call.correlation_id
    await transfers.ask(svc, call, reason, shown=f"{mask_phone_number(number)} over Twilio",
                        record={"target": number, "reason": reason},
                        request=lambda: twilio.transfer(call_sid, number), errors=(TwilioControlError,))
    call.transfer = "accepted"
    svc.metrics.inc("transfers_accepted")
    if call.bridge is not None:
        call.bridge.transfer_outcome(True, "")


def find_by_call_sid(svc: Services, call_sid: str) -> Call | None:
    return next((c for c in svc.registry.calls.values() if c.correlation_id == call_sid), None)


async def _read_start(ws: WebSocket, transport: TwilioTransport) -> list[str]:
    """`connected` and `start`, parsed by `transport` (which keeps the stream's ids and parameters); anything else
    before `start` is dropped (it cannot be trusted yet)."""
    seen: list[str] = []
    for _ in range(MAX_MESSAGES_BEFORE_START):
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            raise StreamRefused("the socket closed before start")
        raw = message.get("text")
        if raw is None:
            raise StreamRefused("a binary message before start")
        if '"connected"' in raw and '"start"' not in raw:
            seen.append(raw)
        elif '"start"' in raw:
            seen.append(raw)
            parsed = transport.parse(raw)
            if transport.started:
                if not transport.format_ok:
                    raise StreamRefused("the stream is not mu-law 8 kHz mono")
                return seen
            if parsed is not None:
                raise StreamRefused("a malformed start message")
    raise StreamRefused(f"no start in the first {MAX_MESSAGES_BEFORE_START} messages")


def _redacted(raw: str) -> str:
    """The start message as recorded: the token replaced (recordings hold no secret)."""
    try:
        msg = orjson.loads(raw)
        msg["start"]["customParameters"]["token"] = "<redacted>"
        return orjson.dumps(msg).decode()
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return raw


async def _verified_start(svc: Services, call_id: str, ws: WebSocket) -> tuple[TwilioTransport, list[str]]:
    """This socket's `start` (within `START_DEADLINE_S`), its token checked against `call_id`."""
    probe = TwilioTransport(call_id, svc.settings.callbot_twilio_model_audio)  # this socket's start, unverified
    async with asyncio.timeout(START_DEADLINE_S):
        seen = await _read_start(ws, probe)
    svc.signer.verify(call_id, probe.parameters.get("token"), purpose="twilio", now=time.time())
    return probe, seen


async def _refuse(svc: Services, call_id: str, ws: WebSocket, exc: Exception, code: int = 1008) -> None:
    reason = getattr(exc, "reason", None) or f"no start within {START_DEADLINE_S:.0f} s"
    svc.metrics.inc("twilio_stream_rejected")
    log.warning("call %s: Twilio stream refused (%d): %s", call_id, code, reason)
    await _close(ws, code)


async def serve_stream(svc: Services, call: Call, ws: WebSocket) -> bool:
    """The (accepted) stream socket of an admitted call: verify its start, then bridge it until the bridge ends
    (True). A refused socket is closed with 1008 (False); the call waits on for its real stream (the watchdog)."""
    try:
        probe, seen = await _verified_start(svc, call.call_id, ws)
        if probe.call_sid != call.correlation_id:
            raise StreamRefused("the stream belongs to another Twilio call")
        if call.media_connected or call.ended:
            raise StreamRefused("the call already has its stream")
    except (TimeoutError, StreamRefused, TokenRejected, WebSocketDisconnect) as exc:
        await _refuse(svc, call.call_id, ws, exc)
        return False
    await _attach(svc, call, seen, ws)
    return True


async def adopt_stream(svc: Services, call_id: str, ws: WebSocket) -> Call | None:
    """The (accepted) stream socket of a call another replica answered (the ingress sent the socket here): once its
    start carries a valid token for `call_id` (signed with this deployment's key when the TwiML was made), this
    replica takes the call over and bridges it; the call's REST control works from here too (the call sid is in
    `start`). None when refused (bad start or token: 1008; full or draining: 1013, Twilio ends the call)."""
    try:
        probe, seen = await _verified_start(svc, call_id, ws)
    except (TimeoutError, StreamRefused, TokenRejected, WebSocketDisconnect) as exc:
        await _refuse(svc, call_id, ws, exc)
        return None
    if svc.registry.get(call_id) is not None or svc.registry.has_ended(call_id):
        await _refuse(svc, call_id, ws, StreamRefused("the call already has its stream"))
        return None
    call = admit(svc, probe.call_sid, "", call_id=call_id)
    if call is None:
        await _refuse(svc, call_id, ws, StreamRefused("cannot take over the call: busy"), code=WS_TRY_AGAIN_LATER)
        return None
    svc.metrics.inc("calls_adopted")
    log.info("call %s: Twilio stream for call %s answered elsewhere; adopting it", call_id, probe.call_sid)
    await _attach(svc, call, seen, ws)
    return call


async def _attach(svc: Services, call: Call, seen: list[str], ws: WebSocket) -> None:
    call.answered.set()
    assert call.bridge is not None
    transport = call.bridge.transport
    assert isinstance(transport, TwilioTransport)
    for raw in seen:  # the verified stream's ids reach the call's own adapter (and its recording, token redacted)
        if call.recorder is not None:
            call.recorder.acs_in(_redacted(raw) if '"start"' in raw else raw)
        transport.parse(raw)
    await svc.attach_media(call, ws)


async def _close(ws: WebSocket, code: int) -> None:
    try:
        await ws.close(code=code)
    except (WebSocketDisconnect, RuntimeError, OSError):  # the client is gone already
        pass
