"""A web phone call's lifecycle: a call like any other (the registry's cap, a recording, the same bridge and agent),
on the web transport, ended by the page's hang-up, the socket closing, or the bridge."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from callbot.web.adapter import WebTransport, ended_message

if TYPE_CHECKING:
    from callbot.services import Services

log = logging.getLogger(__name__)


async def serve_web_call(svc: Services, call_id: str, ws: WebSocket) -> None:
    """Bridge the page's (accepted) socket to the agent until the call ends."""
    call = svc.registry.create(caller="web", call_id=call_id)
    svc.metrics.inc("calls")
    svc.metrics.inc("calls_web")
    log.info("call %s: web phone call", call_id)
    svc._open_recorder(call, transport="web")

    async def tell_the_page(reason: str) -> None:  # the agent ended the call (goodbye, apology, time limit)
        if ws.application_state == WebSocketState.CONNECTED:
            try:
                await ws.send_text(ended_message(reason))
            except (WebSocketDisconnect, RuntimeError, OSError):  # the page is gone already
                pass

    svc._start_bridge(call, transport=WebTransport(call_id), on_hang_up=tell_the_page)
    try:
        await svc.attach_media(call, ws)
    finally:
        svc.registry.finish(call, call.bridge.end_reason or "web call ended")
