"""The async glue around `BridgeCore`: one caller socket (the call's transport) <-> one Voice Live session.

Tasks per call, in one `TaskGroup`: the caller's reader (its audio goes straight to the model socket while that keeps
up), the Voice Live session (connect, configure, read events; reconnects with backoff) with its writer (a bounded
outbox for everything else and for caller audio when the socket lags: a slow model socket never blocks it), and the
agent's tool calls and transfer. The playout (paced bot frames, StopAudio, notices: the only writer to the caller's
socket, so a stalled one never blocks the Voice Live pump) has no task of its own: a send pass runs when the event
that makes something due kicks it, or when the process's one `Pacer` says the next chunk is due. Every decision is
the core's; this module moves bytes and reads the clock.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

from azure.ai.voicelive.aio import VoiceLiveConnection
from starlette.websockets import WebSocket, WebSocketDisconnect

from callbot.audio.formats import MEDIA_FORMATS
from callbot.bridge.actions import Leave, RunTool, Transfer, TransferError
from callbot.bridge.core import Action, BridgeCore, CoreConfig, HangUp, Notify, PlayAudio, StopPlayback, VlSend
from callbot.bridge.pacer import Pacer, start_now
from callbot.bridge.timings import CallTimings
from callbot.bridge.tools import ToolHost, ToolStats, run_tool
from callbot.bridge.transport import CallerLeft, KeyPress, Transport, dispatch, messages
from callbot.bridge.vl_loop import CallOver, run_voicelive
from callbot.bridge.wire import APPEND, OUTBOX_LIMIT, Outbox, WireTap
from callbot.config import Settings
from callbot.voicelive.connection import VoiceLiveConnector, send_now

log = logging.getLogger(__name__)

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
        tools: ToolHost | None = None,
        on_transfer: Callable[[str], Awaitable[None]] | None = None,
        timings: CallTimings | None = None,
        session_metadata: Mapping[str, str] | None = None,
        pacer: Pacer | None = None,
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
        self.tools = tools
        self.on_transfer = on_transfer  # hands the call to a person (raises TransferError); None: not on this call
        definitions = tools.definitions() if tools is not None else []
        self.core = BridgeCore(CoreConfig.from_settings(
            call_id, settings, transport.media, transport.name, transport.notify, can_transfer=on_transfer is not None,
            tools=definitions, approve_mcp=tools.approves if tools is not None else None, metadata=session_metadata))
        if tap is not None:
            tap.agent(on_transfer is not None, definitions)
        self.tool_stats = ToolStats()
        self.timings = timings if timings is not None else CallTimings()  # latency histograms, as the call goes
        self.tg: asyncio.TaskGroup | None = None  # while running: tool calls and transfers run in it
        self.leaving = False  # the bridge ends without hanging up (the call was transferred)
        self.notices: deque[str | bytes] = deque()  # Notify messages for the caller's side, sent by the playout
        self.loop = asyncio.get_running_loop()
        self._clock = clock if clock is not None else self.loop.time  # injectable for tests, like JwtVerifier's
        self._loop_clock = clock is None  # deadlines are already in loop time
        self.sleep = sleep if sleep is not None else asyncio.sleep
        self.outbox = Outbox(OUTBOX_LIMIT)
        self.vl_conn: VoiceLiveConnection | None = None  # the open Voice Live session's connection, for `send_now`
        self.stop_pending = False  # StopAudio to send before anything else (set by a barge-in)
        self.pacer = pacer if pacer is not None else Pacer()  # the process's one playout clock (a call's own: tests)
        self.due_at = math.inf  # this call's entry in the pacer
        self.running = False
        self._passing = False  # a playout pass is under way (`kick`)
        self._again = False  # ... and something new arrived during it
        self._pass: asyncio.Task[None] | None = None  # that pass, while it waits on the caller's socket
        self._context = contextvars.Context()  # the call's own, taken when it runs (`run`): playout passes use it
        self.defect: BaseException | None = None  # an unexpected error in a playout pass
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
        self.stop_reason = self.stop_reason or reason
        self.stopped.set()

    def end_gracefully(self, reason: str) -> None:
        """Say goodbye (or the apology), then hang up: used when draining for shutdown."""
        if self.tap is not None:
            self.tap.end_call(reason, self.apology)
        self._execute_now(self.core.end_call(self.now(), reason, local_audio=self.apology))
        self.kick()  # the playout recomputes its deadline (goodbye timeout) and plays the last words

    async def _watch_stop(self) -> None:
        await self.stopped.wait()
        if self.defect is not None:
            raise self.defect
        raise CallOver(self.stop_reason)

    def now(self) -> float:
        return self._clock()

    def attach(self, ws: WebSocket) -> None:
        """The call's ACS media socket arrived: caller audio flows in and bot audio may start playing."""
        if self.tap is not None:
            self.tap.media_opened()
        self.ws = ws
        self.core.media_started(self.now())
        self.media_attached.set()
        self.kick()

    async def run(self) -> str:
        """Bridge until the call ends; returns why it ended. Never raises for call-level failures.

        Starts as soon as the call is being answered, so the Voice Live session (and the greeting) is ready while ACS
        connects the media socket; `attach` hands the socket over when it arrives.
        """
        self.core.start(self.now())
        self.timings.start(self.now())
        self._context = contextvars.copy_context()  # the call's (its trace span is current in it): playout passes
        try:
            async with asyncio.TaskGroup() as tg:
                self.tg = tg
                self.running = True
                tg.create_task(self._media())
                tg.create_task(run_voicelive(self))
                tg.create_task(self._watch_stop())
                self.kick()
        except* CallOver as group:
            first = group.exceptions[0]
            self.end_reason = first.reason if isinstance(first, CallOver) else "ended"
        finally:
            self.running = False
            self.tg = None
            self.pacer.at(self, None)
            if self._pass is not None:
                self._pass.cancel()
                await asyncio.gather(self._pass, return_exceptions=True)
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
                event = action.event
                if self.tap is not None:
                    self.tap.vl_out(event)
                # caller audio goes straight to the model socket while it keeps up and nothing waits before it; the
                # recovery ring (core) makes up for what a silently dead socket swallows
                conn = self.vl_conn
                if conn is None or self.outbox.items or event.get("type") != APPEND or not send_now(conn, event):
                    self.outbox.put(event)
            elif isinstance(action, StopPlayback):
                self.stop_pending = True
                self.kick()
            elif isinstance(action, Notify):
                message = self.transport.notify_message(action.event)
                if message is not None:
                    self.notices.append(message)
                    self.kick()
            elif isinstance(action, HangUp | Leave):
                self.end_reason = action.reason
                self.leaving = isinstance(action, Leave)
                hang_up = True
            elif isinstance(action, RunTool) and self.tg is not None:
                self.tg.create_task(self._run_tool(action), name=f"tool-{self.call_id}-{action.name}")
            elif isinstance(action, Transfer) and self.tg is not None:
                self.tg.create_task(self._transfer(action.reason), name=f"transfer-{self.call_id}")
        return hang_up

    async def execute(self, actions: list[Action]) -> None:
        if self._execute_now(actions):
            await self._hang_up(self.end_reason)

    async def _hang_up(self, reason: str) -> None:
        if self.leaving:  # transferred: the call goes on without callbot
            log.info("call %s: leaving the call (%s)", self.call_id, reason)
            raise CallOver(reason)
        log.info("call %s: hanging up (%s)", self.call_id, reason)
        if self.on_hang_up is not None:
            await self.on_hang_up(reason)
        raise CallOver(reason)

    async def _run_tool(self, action: RunTool) -> None:
        """One operator tool call, in the call's task group: cancelled when the call ends."""
        result = await run_tool(self.tools, self.call_id, action.name, action.arguments)
        self.tool_stats.add(action.name, result)  # its log line is the tool runner's
        self.timings.observe("tool_latency_seconds", result.latency_s, outcome=result.outcome)
        if self.tap is not None:
            self.tap.tool_result(action.call_id, action.name, result.output, result.outcome)
        await self.execute(self.core.tool_result(self.now(), action.call_id, result.output))
        self.kick()

    async def _transfer(self, reason: str) -> None:
        assert self.on_transfer is not None  # the core offers a transfer only when there is a way to do it
        try:
            await self.on_transfer(reason)
        except TransferError as exc:
            self.transfer_outcome(False, str(exc) or "the transfer could not be started")

    def transfer_outcome(self, accepted: bool, detail: str) -> None:
        """ACS's answer to the transfer (CallTransferAccepted / CallTransferFailed, or a refused request)."""
        if self.tg is None:
            return
        if self.tap is not None:
            self.tap.transfer_outcome(accepted, detail)
        actions = self.core.transfer_outcome(self.now(), accepted, detail)
        if self._execute_now(actions):
            self.stop(self.end_reason)  # Leave: the bridge ends, the call stays up
        self.kick()

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
                raise CallOver("caller_hung_up")
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            if self.tap is not None:
                self.tap.acs_in(raw)
            msg = parse(raw)
            if msg is None:
                continue
            if isinstance(msg, CallerLeft):
                raise CallOver("caller_hung_up")
            actions = dispatch(core, self.now(), msg)
            if isinstance(msg, KeyPress):
                self.kick()  # the keypad's pause is a new deadline for the playout's clock
            if actions:
                await self.execute(actions)

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
            raise CallOver("caller_hung_up") from None

    async def _send_frames(self, actions: list[Action]) -> None:
        """The playout's actions: bot frames, and the goodbye or hang-up of an ending call. A barge-in during one of
        these awaits bumps the epoch: the frames after it are dropped and StopAudio goes out next. A stalled ACS
        socket blocks only this task; the model's events go on and bot audio waits in the core's bounded queue."""
        transport = self.transport
        for action in actions:
            if self.stop_pending:
                await self._send_stop()
            if isinstance(action, PlayAudio):
                if action.epoch == self.core.epoch:
                    for raw in messages(transport.audio_message(action.pcm)):  # e.g. Twilio's media + mark
                        await self._send(raw)
                    self.timings.audio_sent(self.now())
            elif self._execute_now([action]):
                await self._hang_up(self.end_reason)
        if self.stop_pending:
            await self._send_stop()

    async def _send_stop(self) -> None:
        self.stop_pending = False
        await self._send(self.transport.stop_message())
        self.timings.stop_sent(self.now())

    # -- playout -----------------------------------------------------------------------------------------------

    def kick(self) -> None:
        """Something for the caller's side may be due now (audio arrived, a barge-in, a notice, a new deadline): run
        a send pass at once, or tell the running one to go round again. Never waits."""
        if not self.running:
            return
        if self._passing:
            self._again = True
            return
        self._passing = True
        task = start_now(self.loop, self._playout_pass(), self._context)
        if task.done():  # finished without waiting (the usual case): nothing was scheduled
            self._pass_over(task)
        else:
            self._pass = task  # waiting on the caller's socket: only this call waits
            task.add_done_callback(self._pass_over)

    def due(self) -> None:
        """The pacer's call: this call's next deadline has come."""
        self.kick()

    async def _playout_pass(self) -> None:
        """Send what is due - StopAudio first, notices, the core's released chunks and timed actions - then give the
        pacer the next deadline. The only writer to the caller's socket: passes never overlap."""
        core = self.core
        try:
            while True:
                self._again = False
                if self.stop_pending and self.ws is not None:
                    await self._send_stop()
                while self.notices and self.ws is not None:
                    await self._send(self.notices.popleft())
                actions = core.tick(self.now())
                if actions:
                    await self._send_frames(actions)
                if not (self._again or ((self.stop_pending or self.notices) and self.ws is not None)):
                    break
            deadline = core.next_deadline()
            if deadline is not None and not self._loop_clock:
                deadline += self.loop.time() - self.now()  # an injected clock: its deadline in loop time
            self.pacer.at(self, deadline)
        except CallOver as over:
            self.pacer.at(self, None)
            self.stop(over.reason)
        finally:
            self._passing = False

    def _pass_over(self, task: asyncio.Task[None]) -> None:
        self._pass = None
        if not task.cancelled() and task.exception() is not None:
            self.defect = task.exception()  # a bug, not a call event: the task group ends the call with it
            self.stopped.set()
