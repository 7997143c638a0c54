"""The async glue around `BridgeCore`: one ACS media socket <-> one Voice Live session.

Four tasks per call, in one `TaskGroup`: the ACS reader (caller audio in), the Voice Live session (connect, configure,
read events), the Voice Live writer (a bounded outbox, so a slow model socket never blocks caller audio intake) and
the playout (paces bot frames to ACS). Every decision is the core's; this module only moves bytes and reads the clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

from callbot.acs import media
from callbot.bridge.core import AcsAudio, AcsStop, Action, BridgeCore, CoreConfig, HangUp, VlSend
from callbot.config import Settings
from callbot.voicelive.connection import SendError, VoiceLiveConnector, VoiceLiveUnavailable, receive_event

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 250  # 5 s of caller audio; beyond that the model socket is stalled and the oldest audio is dropped


class WireTap(Protocol):
    """Sees every message at the call's wire boundaries (the call recorder implements it)."""

    def acs_in(self, raw: str | bytes) -> None: ...
    def acs_out(self, text: str) -> None: ...
    def vl_out(self, event: dict[str, Any]) -> None: ...
    def vl_in(self, event: dict[str, Any]) -> None: ...


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


class CallBridge:
    def __init__(
        self,
        call_id: str,
        settings: Settings,
        connector: VoiceLiveConnector,
        *,
        on_hang_up: Callable[[str], Awaitable[None]] | None = None,
        tap: WireTap | None = None,
    ) -> None:
        self.call_id = call_id
        self.settings = settings
        self.connector = connector
        self.on_hang_up = on_hang_up
        self.tap = tap
        self.core = BridgeCore(CoreConfig.from_settings(call_id, settings))
        self.loop = asyncio.get_running_loop()
        self.outbox = _Outbox(OUTBOX_LIMIT)
        self.wake = asyncio.Event()
        self.acs_lock = asyncio.Lock()
        self.ws: WebSocket | None = None
        self.end_reason = ""
        self.voicelive_closed = asyncio.Event()
        self.stopped = asyncio.Event()
        self.stop_reason = ""

    def stop(self, reason: str) -> None:
        """End the bridge from outside (CallDisconnected, shutdown); `run` returns soon after."""
        if not self.stop_reason:
            self.stop_reason = reason
        self.stopped.set()

    async def _watch_stop(self) -> None:
        await self.stopped.wait()
        raise _CallOver(self.stop_reason)

    def now(self) -> float:
        return self.loop.time()

    async def run(self, ws: WebSocket) -> str:
        """Bridge until the call ends; returns why it ended. Never raises for call-level failures."""
        self.ws = ws
        self.core.start(self.now())
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._acs_reader(ws))
                tg.create_task(self._voicelive())
                tg.create_task(self._playout())
                tg.create_task(self._watch_stop())
        except* _CallOver as group:
            first = group.exceptions[0]
            self.end_reason = first.reason if isinstance(first, _CallOver) else "ended"
        finally:
            self.voicelive_closed.set()
        s = self.core.stats
        log.info(
            "call %s: bridge ended (%s): caller frames %d, bot frames %d, barge-ins %d, malformed %d, "
            "caller audio dropped %d+%d", self.call_id, self.end_reason, s.caller_frames, s.bot_frames,
            s.barge_ins, s.malformed, s.caller_frames_dropped, self.outbox.dropped,
        )
        return self.end_reason

    # -- actions -----------------------------------------------------------------------------------------------

    async def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, AcsAudio):
                await self._send_acs_audio(action)
            elif isinstance(action, VlSend):
                if self.tap is not None:
                    self.tap.vl_out(action.event)
                self.outbox.put(action.event)
            elif isinstance(action, AcsStop):
                await self._send_acs(media.STOP_AUDIO)
            elif isinstance(action, HangUp):
                await self._hang_up(action.reason)

    async def _send_acs_audio(self, action: AcsAudio) -> None:
        if action.epoch != self.core.epoch:
            return
        text = media.encode_audio_bytes(action.pcm)
        async with self.acs_lock:
            if action.epoch == self.core.epoch:  # a barge-in may have happened while waiting for the lock
                await self._write_acs(text)

    async def _send_acs(self, text: str) -> None:
        async with self.acs_lock:
            await self._write_acs(text)

    async def _write_acs(self, text: str) -> None:
        assert self.ws is not None
        if self.tap is not None:
            self.tap.acs_out(text)
        try:
            await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            raise _CallOver("caller_hung_up") from None

    async def _hang_up(self, reason: str) -> None:
        log.info("call %s: hanging up (%s)", self.call_id, reason)
        if self.on_hang_up is not None:
            await self.on_hang_up(reason)
        raise _CallOver(reason)

    # -- tasks -------------------------------------------------------------------------------------------------

    async def _acs_reader(self, ws: WebSocket) -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                raise _CallOver("caller_hung_up")
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            if self.tap is not None:
                self.tap.acs_in(raw)
            actions = self.core.acs_message(self.now(), raw)
            if actions:
                await self._execute(actions)

    async def _voicelive(self) -> None:
        try:
            async with self.connector.session() as conn:
                log.info("call %s: Voice Live session open", self.call_id)
                await self._execute(self.core.session_opened(self.now()))
                async with asyncio.TaskGroup() as tg:
                    writer = tg.create_task(self._vl_writer(conn))
                    await self._vl_reader(conn)
                    writer.cancel()
        except VoiceLiveUnavailable as exc:
            log.error("call %s: Voice Live unavailable: %s", self.call_id, exc)
            await self._execute(self.core.session_lost(self.now()))
            await self._execute(self.core.end_call(self.now(), "voicelive_unavailable"))
            raise _CallOver("voicelive_unavailable") from None
        finally:
            self.voicelive_closed.set()
        log.warning("call %s: Voice Live session ended", self.call_id)
        await self._execute(self.core.session_lost(self.now()))
        await self._hang_up("voicelive_closed")

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
            if not had_queue and core.queue:
                self.wake.set()

    async def _vl_writer(self, conn: Any) -> None:
        while True:
            event = await self.outbox.get()
            try:
                await conn.send(event)
            except SendError:
                log.warning("call %s: sending to Voice Live failed", self.call_id)
                return

    async def _playout(self) -> None:
        core = self.core
        while True:
            actions = core.tick(self.now())
            if actions:
                await self._execute(actions)
            deadline = core.next_deadline()
            self.wake.clear()
            handle = self.loop.call_at(deadline, self.wake.set) if deadline is not None else None
            try:
                await self.wake.wait()
            finally:
                if handle is not None:
                    handle.cancel()
