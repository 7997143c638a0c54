"""The async glue around `BridgeCore`: one ACS media socket <-> one Voice Live session.

Tasks per call, in one `TaskGroup`: the ACS reader (caller audio in), the Voice Live session (connect, configure,
read events; reconnects with backoff when the session drops) with its writer (a bounded outbox, so a slow model socket
never blocks caller audio intake), and the playout (paces bot frames; the only writer to the ACS socket, so a stalled
ACS socket never blocks the Voice Live pump). Every decision is the core's; this module moves bytes and reads the clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

from callbot.audio.formats import MEDIA_FORMATS
from callbot.bridge.core import Action, BridgeCore, CoreConfig, HangUp, Notify, PlayAudio, StopPlayback, VlSend
from callbot.bridge.transport import CallerLeft, KeyPress, Transport, dispatch
from callbot.config import Settings
from callbot.voicelive.connection import (
    SendError,
    VoiceLiveConnector,
    VoiceLiveUnavailable,
    receive_event,
    send_event,
)

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 250  # 5 s of caller audio; beyond that the model socket is stalled and the oldest audio is dropped
RECONNECT_DELAYS_S = (0.0, 0.25, 0.75, 1.5)  # delays before attempts after a drop or failed connect; then give up
STABLE_SESSION_S = 10.0  # a session that lasted this long resets the failure count


class WireTap(Protocol):
    """Sees every message at the call's wire boundaries (the call recorder implements it)."""

    def acs_in(self, raw: str | bytes) -> None: ...
    def acs_out(self, raw: str | bytes) -> None: ...
    def vl_out(self, event: dict[str, Any]) -> None: ...
    def vl_in(self, event: dict[str, Any]) -> None: ...
    def voicelive_closed(self, unsent_audio: list[str]) -> None: ...
    def media_opened(self) -> None: ...
    def end_call(self, reason: str, local_audio: bytes) -> None: ...


class _CallOver(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Outbox:
    """Bounded queue of client events for Voice Live. When full, the oldest caller audio is dropped, never control."""

    def __init__(self, limit: int) -> None:
        self.items: deque[dict[str, Any]] = deque()
        self.limit = limit
        self.ready = asyncio.Event()
        self.dropped = 0

    def put(self, event: dict[str, Any]) -> None:
        if len(self.items) >= self.limit:
            for i, queued in enumerate(self.items):
                if queued.get("type") == "input_audio_buffer.append":
                    del self.items[i]
                    self.dropped += 1
                    break
        self.items.append(event)
        self.ready.set()

    async def get(self) -> dict[str, Any]:
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        return self.items.popleft()

    def take_audio(self) -> list[str]:
        """Remove everything; return the caller audio that never left (to be re-sent to the next session)."""
        audio = [e["audio"] for e in self.items if e.get("type") == "input_audio_buffer.append"]
        self.items.clear()
        return audio


class CallBridge:
    def __init__(
        self,
        call_id: str,
        settings: Settings,
        connector: VoiceLiveConnector,
        *,
        on_hang_up: Callable[[str], Awaitable[None]] | None = None,
        tap: WireTap | None = None,
        apology: bytes = b"",
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.call_id = call_id
        self.settings = settings
        self.connector = connector
        self.on_hang_up = on_hang_up
        self.tap = tap
        self.apology = apology
        if transport is None:
            from callbot.acs.adapter import AcsTransport

            transport = AcsTransport(call_id, MEDIA_FORMATS[settings.callbot_media_format])
        self.transport = transport
        self.core = BridgeCore(CoreConfig.from_settings(call_id, settings, transport.media, transport.name,
                                                        transport.notify))
        self.notices: deque[str | bytes] = deque()  # Notify messages for the caller's side, sent by the playout
        self.loop = asyncio.get_running_loop()
        self._clock = clock if clock is not None else self.loop.time  # injectable for tests, like JwtVerifier's
        self._sleep = sleep if sleep is not None else asyncio.sleep
        self.outbox = _Outbox(OUTBOX_LIMIT)
        self.stop_pending = False  # StopAudio to send before anything else (set by a barge-in)
        self.wake = asyncio.Event()
        self.ws: WebSocket | None = None
        self.media_attached = asyncio.Event()
        self.finished = asyncio.Event()
        self.end_reason = ""
        self.stopped = asyncio.Event()
        self.stop_reason = ""
        self.reconnects = 0
        self.longest_gap_s = 0.0
        self.voicelive_failure = ""  # why the call ended without a model: a cause of VoiceLiveUnavailable

    def stop(self, reason: str) -> None:
        """End the bridge from outside (CallDisconnected, shutdown); `run` returns soon after."""
        if not self.stop_reason:
            self.stop_reason = reason
        self.stopped.set()

    def end_gracefully(self, reason: str) -> None:
        """Say goodbye (or the apology), then hang up: used when draining for shutdown."""
        if self.tap is not None:
            self.tap.end_call(reason, self.apology)
        self._execute_now(self.core.end_call(self.now(), reason, local_audio=self.apology))
        self.wake.set()  # the playout recomputes its deadline (goodbye timeout) and plays the last words

    async def _watch_stop(self) -> None:
        await self.stopped.wait()
        raise _CallOver(self.stop_reason)

    def now(self) -> float:
        return self._clock()

    def attach(self, ws: WebSocket) -> None:
        """The call's ACS media socket arrived: caller audio flows in and bot audio may start playing."""
        if self.tap is not None:
            self.tap.media_opened()
        self.ws = ws
        self.core.media_started(self.now())
        self.media_attached.set()
        self.wake.set()

    async def run(self) -> str:
        """Bridge until the call ends; returns why it ended. Never raises for call-level failures.

        Starts as soon as the call is being answered, so the Voice Live session (and the greeting) is ready while ACS
        connects the media socket; `attach` hands the socket over when it arrives.
        """
        self.core.start(self.now())
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._media())
                tg.create_task(self._voicelive())
                tg.create_task(self._playout())
                tg.create_task(self._watch_stop())
        except* _CallOver as group:
            first = group.exceptions[0]
            self.end_reason = first.reason if isinstance(first, _CallOver) else "ended"
        finally:
            self.finished.set()
        s = self.core.stats
        log.info(
            "call %s: bridge ended (%s): caller frames %d, bot frames %d, barge-ins %d, malformed %d, "
            "caller audio dropped %d+%d, bot audio dropped %d, Voice Live reconnects %d (longest gap %.2f s)",
            self.call_id, self.end_reason, s.caller_frames, s.bot_frames, s.barge_ins, s.malformed,
            s.caller_frames_dropped, self.outbox.dropped, s.bot_frames_dropped, self.reconnects,
            self.longest_gap_s,
        )
        return self.end_reason

    # -- actions -----------------------------------------------------------------------------------------------

    def _execute_now(self, actions: list[Action]) -> bool:
        """Carry out the actions that never wait; True when one of them is a hang-up. Bot frames are sent by the
        playout (`_send_frames`), which is the only task writing to the ACS socket."""
        hang_up = False
        for action in actions:
            if isinstance(action, VlSend):
                if self.tap is not None:
                    self.tap.vl_out(action.event)
                self.outbox.put(action.event)
            elif isinstance(action, StopPlayback):
                self.stop_pending = True
                self.wake.set()
            elif isinstance(action, Notify):
                message = self.transport.notify_message(action.event)
                if message is not None:
                    self.notices.append(message)
                    self.wake.set()
            elif isinstance(action, HangUp):
                self.end_reason = action.reason
                hang_up = True
        return hang_up

    async def _execute(self, actions: list[Action]) -> None:
        if self._execute_now(actions):
            await self._hang_up(self.end_reason)

    async def _hang_up(self, reason: str) -> None:
        log.info("call %s: hanging up (%s)", self.call_id, reason)
        if self.on_hang_up is not None:
            await self.on_hang_up(reason)
        raise _CallOver(reason)

    # -- ACS ---------------------------------------------------------------------------------------------------

    async def _media(self) -> None:
        await self.media_attached.wait()
        assert self.ws is not None
        await self._reader(self.ws)

    async def _reader(self, ws: WebSocket) -> None:
        """The caller's side: each message parsed by the transport adapter and fed to the core."""
        parse, core = self.transport.parse, self.core
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                raise _CallOver("caller_hung_up")
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            if self.tap is not None:
                self.tap.acs_in(raw)
            msg = parse(raw)
            if msg is None:
                continue
            if isinstance(msg, CallerLeft):
                raise _CallOver("caller_hung_up")
            actions = dispatch(core, self.now(), msg)
            if isinstance(msg, KeyPress):
                self.wake.set()  # the keypad's pause is a new deadline for the playout's clock
            if actions:
                await self._execute(actions)

    async def _send(self, raw: str | bytes) -> None:
        assert self.ws is not None
        if self.tap is not None:
            self.tap.acs_out(raw)
        try:
            if isinstance(raw, str):
                await self.ws.send_text(raw)
            else:
                await self.ws.send_bytes(raw)
        except (WebSocketDisconnect, RuntimeError, OSError):
            raise _CallOver("caller_hung_up") from None

    async def _send_frames(self, actions: list[Action]) -> None:
        """The playout's actions: bot frames, and the goodbye or hang-up of an ending call. A barge-in during one of
        these awaits bumps the epoch: the frames after it are dropped and StopAudio goes out next. A stalled ACS
        socket blocks only this task; the model's events go on and bot audio waits in the core's bounded queue."""
        transport = self.transport
        for action in actions:
            if self.stop_pending:
                self.stop_pending = False
                await self._send(transport.stop_message())
            if isinstance(action, PlayAudio):
                if action.epoch == self.core.epoch:
                    await self._send(transport.audio_message(action.pcm))
            elif self._execute_now([action]):
                await self._hang_up(self.end_reason)
        if self.stop_pending:
            self.stop_pending = False
            await self._send(transport.stop_message())

    # -- Voice Live --------------------------------------------------------------------------------------------

    async def _voicelive(self) -> None:
        """Open, run and re-open the call's Voice Live session. A drop mid-call is one WARNING; failed attempts are
        INFO; giving up (the retry budget spent, or a cause that retrying cannot fix: refused credential, bad URL,
        TLS) is one ERROR naming the cause, and the caller hears the apology before the hang-up."""
        failures = 0
        lost_at: float | None = None
        while True:
            opened_at: float | None = None
            cause, permanent = "closed", False
            try:
                async with self.connector.session() as conn:
                    opened_at = self.now()
                    if lost_at is not None:
                        gap = opened_at - lost_at
                        self.reconnects += 1
                        self.longest_gap_s = max(self.longest_gap_s, gap)
                        log.warning("call %s: Voice Live reconnected after %.2f s; restoring %d turn(s)",
                                    self.call_id, gap, len(self.core.turns))
                    else:
                        log.info("call %s: Voice Live session open", self.call_id)
                    lost_at = None
                    await self._execute(self.core.session_opened(self.now()))
                    await self._run_session(conn)
                reason = "session ended"
                if not self.core.ended:
                    log.warning("call %s: Voice Live session dropped; reconnecting", self.call_id)
            except VoiceLiveUnavailable as exc:
                reason, cause, permanent = f"unavailable ({exc})", exc.cause, exc.permanent
            now = self.now()
            lost_at = lost_at if lost_at is not None else now
            unsent = self.outbox.take_audio()
            if self.tap is not None:
                self.tap.voicelive_closed(unsent)
            await self._execute(self.core.session_lost(now, unsent))
            if opened_at is not None and now - opened_at >= STABLE_SESSION_S:
                failures = 0
            failures += 1
            if permanent or failures > len(RECONNECT_DELAYS_S):
                self.voicelive_failure = cause
                log.error("call %s: Voice Live %s [%s] after %d attempt(s); apologising and ending the call",
                          self.call_id, reason, cause, failures)
                if self.tap is not None:
                    self.tap.end_call("voicelive_unavailable", self.apology)
                await self._execute(self.core.end_call(now, "voicelive_unavailable", local_audio=self.apology))
                self.wake.set()
                return  # the playout hangs up once the apology has played
            delay = RECONNECT_DELAYS_S[failures - 1]
            log.info("call %s: Voice Live %s; attempt %d in %.2f s", self.call_id, reason, failures + 1, delay)
            await self._sleep(delay)

    async def _run_session(self, conn: Any) -> None:
        writer = asyncio.create_task(self._vl_writer(conn))
        try:
            await self._vl_reader(conn)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _vl_reader(self, conn: Any) -> None:
        core = self.core
        while True:
            event = await receive_event(conn)
            if event is None:
                return
            if self.tap is not None:
                self.tap.vl_in(event)
            had_queue = bool(core.queue)
            actions = core.server_event(self.now(), event)
            if actions:
                await self._execute(actions)
            if core.queue and not had_queue:
                self.wake.set()

    async def _vl_writer(self, conn: Any) -> None:
        while True:
            event = await self.outbox.get()
            try:
                await send_event(conn, event)
            except SendError:
                log.warning("call %s: sending to Voice Live failed; closing the session", self.call_id)
                self.outbox.items.appendleft(event)
                await conn.close()
                return

    # -- playout -----------------------------------------------------------------------------------------------

    async def _playout(self) -> None:
        core = self.core
        while True:
            if self.stop_pending and self.ws is not None:
                self.stop_pending = False
                await self._send(self.transport.stop_message())
            while self.notices and self.ws is not None:
                await self._send(self.notices.popleft())
            actions = core.tick(self.now())
            if actions:
                await self._send_frames(actions)
            deadline = core.next_deadline()
            if (self.stop_pending or self.notices) and self.ws is not None:
                continue
            self.wake.clear()
            handle = self.loop.call_later(deadline - self.now(), self.wake.set) if deadline is not None else None
            try:
                await self.wake.wait()
            finally:
                if handle is not None:
                    handle.cancel()
