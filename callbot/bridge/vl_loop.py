"""The Voice Live side of a call's bridge (functions of a `CallBridge`, whose state they use): open, run and re-open
the session, read its events into the core, and write the core's events from the outbox."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from callbot.bridge.pacer import event_moves_playout
from callbot.voicelive.connection import SendError, VoiceLiveUnavailable, receive_event, send_event

if TYPE_CHECKING:
    from callbot.bridge.runner import CallBridge

log = logging.getLogger(__name__)

RECONNECT_DELAYS_S = (0.0, 0.25, 0.75, 1.5)  # delays before attempts after a drop or failed connect; then give up
STABLE_SESSION_S = 10.0  # a session that lasted this long resets the failure count


class CallOver(Exception):
    """Ends the call's task group; `reason` is why the call ended."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def run_voicelive(bridge: CallBridge) -> None:
    """Open, run and re-open the call's Voice Live session. A drop mid-call is one WARNING; failed attempts are
    INFO; giving up (the retry budget spent, or a cause that retrying cannot fix: refused credential, bad URL,
    TLS) is one ERROR naming the cause, and the caller hears the apology before the hang-up."""
    failures = 0
    lost_at: float | None = None
    while True:
        opened_at: float | None = None
        cause, permanent = "closed", False
        try:
            attempt_at = bridge.now()
            async with bridge.connector.session() as conn:
                opened_at = bridge.now()
                bridge.timings.observe("voicelive_connect_seconds", opened_at - attempt_at, outcome="ok")
                if lost_at is not None:
                    gap = opened_at - lost_at
                    bridge.timings.observe("voicelive_reconnect_gap_seconds", gap)
                    bridge.reconnects += 1
                    bridge.longest_gap_s = max(bridge.longest_gap_s, gap)
                    log.warning("call %s: Voice Live reconnected after %.2f s; restoring %d turn(s)",
                                bridge.call_id, gap, len(bridge.core.turns))
                else:
                    log.info("call %s: Voice Live session open", bridge.call_id)
                lost_at = None
                bridge.timings.session_update_sent(bridge.now())
                await bridge.execute(bridge.core.session_opened(bridge.now()))
                await _run_session(bridge, conn)
            reason = "session ended"
            if not bridge.core.ended:
                log.warning("call %s: Voice Live session dropped; reconnecting", bridge.call_id)
        except VoiceLiveUnavailable as exc:
            reason, cause, permanent = f"unavailable ({exc})", exc.cause, exc.permanent
            bridge.timings.observe("voicelive_connect_seconds", bridge.now() - attempt_at, outcome="failed")
        now = bridge.now()
        lost_at = lost_at if lost_at is not None else now
        bridge.outbox.items.clear()  # its caller audio is in the core's re-send ring (`CallerAudio`)
        if bridge.tap is not None:
            bridge.tap.voicelive_closed()
        await bridge.execute(bridge.core.session_lost(now))
        if opened_at is not None and now - opened_at >= STABLE_SESSION_S:
            failures = 0
        failures += 1
        if permanent or failures > len(RECONNECT_DELAYS_S):
            bridge.voicelive_failure = cause
            log.error("call %s: Voice Live %s [%s] after %d attempt(s); apologising and ending the call",
                      bridge.call_id, reason, cause, failures)
            if bridge.tap is not None:
                bridge.tap.end_call("voicelive_unavailable", bridge.apology)
            await bridge.execute(bridge.core.end_call(now, "voicelive_unavailable", local_audio=bridge.apology))
            bridge.kick()
            return  # the playout hangs up once the apology has played
        delay = RECONNECT_DELAYS_S[failures - 1]
        log.info("call %s: Voice Live %s; attempt %d in %.2f s", bridge.call_id, reason, failures + 1, delay)
        await bridge.sleep(delay)

async def _run_session(bridge: CallBridge, conn: Any) -> None:
    writer = asyncio.create_task(_vl_writer(bridge, conn))
    bridge.vl_conn = conn  # caller audio may go straight to it (`send_now`) while the writer has nothing queued
    try:
        await _vl_reader(bridge, conn)
    finally:
        bridge.vl_conn = None
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)

async def _vl_reader(bridge: CallBridge, conn: Any) -> None:
    core = bridge.core
    while True:
        event = await receive_event(conn)
        if event is None:
            return
        if bridge.tap is not None:
            bridge.tap.vl_in(event)
        kind = event.get("type")
        if kind == "input_audio_buffer.speech_started" or kind == "input_audio_buffer.speech_stopped":
            bridge.timings.voicelive_event(bridge.now(), kind)
        elif kind == "session.updated":
            bridge.timings.session_updated(bridge.now())
        had_queue = bool(core.queue)
        actions = core.server_event(bridge.now(), event)
        if actions:
            await bridge.execute(actions)
        if event_moves_playout(core, had_queue):
            bridge.kick()  # new deadlines for the playout's clock: audio to pace, a holding line, a handover

async def _vl_writer(bridge: CallBridge, conn: Any) -> None:
    while True:
        event = await bridge.outbox.get()
        try:
            await send_event(conn, event)
        except SendError:
            log.warning("call %s: sending to Voice Live failed; closing the session", bridge.call_id)
            bridge.outbox.items.appendleft(event)
            await conn.close()
            return

