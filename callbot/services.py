"""The process-wide services one app instance owns, and the call lifecycle that ties them together.

Created in the app's lifespan, closed on shutdown: the Voice Live connector (credential), the ACS call control
client, token verifiers and signer, the call registry and metrics. Nothing here is module-level state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from callbot import transfers
from callbot.acs import events
from callbot.acs.auth import AcsTokenVerifier
from callbot.acs.control import CallControl, CallControlError, ConfigError
from callbot.assets import apology, apology_for
from callbot.bridge.runner import CallBridge
from callbot.bridge.timings import CallTimings
from callbot.bridge.transport import Transport
from callbot.calls import Call, CallRegistry
from callbot.config import Settings
from callbot.metrics import ACS_EVENT_NAMES, Metrics, count_bridge
from callbot.recording_store import BlobStore, open_recordings
from callbot.security import CallTokenSigner, EventGridAuth
from callbot.telemetry import Telemetry, call_sink, correlate_logs, session_ids, traced
from callbot.tools import CallInfo, ToolRunner, ToolsFile, read_tools_file
from callbot.tools.host import CallTools
from callbot.urls import CALLBACK_TOKEN_TTL_S, MEDIA_TOKEN_TTL_S, public_urls
from callbot.voicelive.connection import VoiceLiveConnector
from callbot.web.access import KeyAttempts

log = logging.getLogger(__name__)

MEDIA_CONNECT_TIMEOUT_S = 30.0
GOODBYE_GRACE_S = 20.0  # after the drain time: a goodbye plays (bounded by the core's goodbye timeout) then hang-up
CALL_ENDING_EVENTS = frozenset({"CallDisconnected", "MediaStreamingFailed", "AnswerFailed", "CreateCallFailed"})


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.telemetry: Telemetry | None = None  # OpenTelemetry, when the environment asks for an exporter
        self.registry = CallRegistry(settings.callbot_max_concurrent_calls)
        self.signer = CallTokenSigner.from_settings(settings)
        self.acs_verifier = AcsTokenVerifier.from_settings(settings)
        self.eventgrid_auth = EventGridAuth.from_settings(settings) if settings.callbot_eventgrid_audience else None
        self.control: CallControl | None = None
        self.control_problem = ""
        self.connector: VoiceLiveConnector | None = None
        self.standin: Any = None
        self.tools: ToolsFile | None = None  # CALLBOT_TOOLS_FILE, loaded at start (a bad file: start-up fails)
        self.tool_runner: ToolRunner | None = None  # set with `tools`: calls their HTTP tools
        self.sockets = 0  # open media sockets, handshakes included (counted by the app's media endpoint)
        self.web_attempts = KeyAttempts()  # the web phone's key checks, rate-limited per client address
        self.twilio: Any = None  # callbot.twilio.control.TwilioControl when Twilio credentials are set
        self.recordings: Path | BlobStore | None = None  # CALLBOT_RECORDINGS_DIR or _URL (opened at start)
        self.metrics.gauges["active_calls"] = lambda: len(self.registry)
        self.metrics.gauges["media_sockets"] = lambda: self.sockets

    async def __aenter__(self) -> Services:
        s = self.settings
        endpoint = s.azure_voicelive_endpoint
        self.tools = await read_tools_file(s.callbot_tools_file) if s.callbot_tools_file is not None else None
        if s.offline:
            try:
                from callbot.local.voicelive.standin import start_standin
            except ImportError as exc:
                raise RuntimeError(
                    f"AZURE_VOICELIVE_ENDPOINT is not set and the offline Voice Live stand-in cannot load ({exc}): "
                    "set AZURE_VOICELIVE_ENDPOINT, or install the offline extra: pip install 'callbot[local]'"
                ) from None
            self.standin = await start_standin(s)
            endpoint = self.standin.url
            log.info("no AZURE_VOICELIVE_ENDPOINT: using the built-in offline Voice Live stand-in at %s "
                     "(a deterministic local responder, not an LLM)", endpoint)
        self.connector = VoiceLiveConnector(s, endpoint=endpoint,
                                            credential=self.standin.credential if self.standin else None)
        try:
            self.control = CallControl.from_settings(s)
        except (ConfigError, ValueError) as exc:
            self.control_problem = str(exc)
            log.error("%s", exc)
        if not s.acs_resource_id:
            log.error("ACS_RESOURCE_ID is not set: every ACS callback and media socket will be refused")
        if s.callbot_webhook_secret is None:
            log.error("CALLBOT_WEBHOOK_SECRET is not set: the incoming-call webhook refuses every request")
        if not s.callbot_public_url:
            log.error("CALLBOT_PUBLIC_URL is not set: incoming calls cannot be answered")
        self.telemetry = Telemetry.from_environment()
        if self.telemetry is not None:
            self.metrics.observers.append(self.telemetry.record)
            correlate_logs()
        self.tool_runner = await ToolRunner().__aenter__() if self.tools is not None else None
        self.recordings = await open_recordings(s)
        if s.twilio:
            from callbot.twilio.control import TwilioControl

            self.twilio = TwilioControl.from_settings(s)
        log.info("callbot ready: Voice Live %s (%s auth), media %s, up to %d concurrent calls",
                 endpoint, self.connector.auth_mode, s.callbot_media_format, s.callbot_max_concurrent_calls)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        for call in list(self.registry.calls.values()):
            self.registry.finish(call, "shutdown")
        try:
            async with asyncio.timeout(5.0):
                await self.registry.wait_idle()
        except TimeoutError:
            log.warning("%d call(s) did not wind down within 5 s of shutdown", len(self.registry))
        pending = set(self.registry.background)
        for call in self.registry.calls.values():
            pending |= call.tasks
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        closing: tuple[Any, ...] = (self.control, self.connector, self.acs_verifier, self.eventgrid_auth,
                                    self.tool_runner, self.twilio, self.recordings)
        for resource in closing:  # each holds an HTTP session or a credential
            if resource is not None and not isinstance(resource, Path):
                await resource.close()
        if self.standin is not None:
            await self.standin.stop()
        if self.telemetry is not None:
            await asyncio.to_thread(self.telemetry.shutdown)  # flushes the exporters: network I/O

    async def drain(self, seconds: float) -> None:
        """Shutdown: stop taking calls (readyz 503, IncomingCall rejected), let live calls go on for up to
        `seconds`, then end the rest with a goodbye and a hang-up."""
        self.registry.draining = True
        log.warning("draining: %d live call(s) may continue for up to %.0f s; new calls are rejected",
                    len(self.registry), seconds)
        try:
            async with asyncio.timeout(seconds):
                await self.registry.wait_idle()
            log.info("drained: no live calls")
            return
        except TimeoutError:
            pass
        log.warning("drain time is up: ending %d call(s) with a goodbye", len(self.registry))
        for call in list(self.registry.calls.values()):
            if call.end_gracefully is not None:
                call.end_gracefully("shutdown")
            else:
                self.registry.spawn(self.hang_up(call, "shutdown"))
        try:
            async with asyncio.timeout(GOODBYE_GRACE_S):
                await self.registry.wait_idle()
        except TimeoutError:
            log.error("%d call(s) still live after the goodbye grace period; closing them", len(self.registry))
            for call in list(self.registry.calls.values()):
                self.registry.finish(call, "shutdown")

    def readiness_problems(self) -> list[str]:
        problems = []
        if self.registry.draining:
            problems.append("draining")
        if self.control is None:
            problems.append(self.control_problem or "ACS not configured")
        for name in ("acs_resource_id", "callbot_webhook_secret", "callbot_public_url"):
            if getattr(self.settings, name) is None:
                problems.append(f"{name.upper()} not set")
        return problems

    # -- call lifecycle ----------------------------------------------------------------------------------------

    def take_call(self, ev: events.IncomingCall) -> None:
        """Admit (answer in the background) or reject an incoming call; returns at once."""
        caller = events.mask_phone_number(ev.caller_phone) if ev.caller_phone else ev.caller_raw_id[:12] + "..."
        refusal = self.registry.admission_refusal()
        if refusal is None and (self.control is None or not self.settings.callbot_public_url):
            refusal = "not configured"
        if refusal is not None:
            self.registry.rejected += 1
            self.metrics.inc("calls_rejected")
            log.warning("incoming call from %s rejected: %s", caller, refusal)
            if self.control is not None:
                self.registry.spawn(self.control.reject_or_log(ev.incoming_call_context))
            return
        call = self.registry.create(caller=caller)
        call.caller_id = ev.caller_phone or ev.caller_raw_id
        call.correlation_id = ev.correlation_id
        call.caller_raw_id = ev.caller_raw_id
        self.metrics.inc("calls")
        log.info("call %s: incoming from %s (%s), correlation %s", call.call_id, caller,
                 ev.caller_display_name or "no name", ev.correlation_id)
        self._open_recorder(call)
        if call.recorder is not None:
            call.recorder.incoming_call(dataclasses.asdict(ev))
        # The Voice Live session opens while ACS answers and connects the media socket: the greeting is ready
        # the moment the caller can hear it.
        self._start_bridge(call)
        self.registry.spawn(self._answer(call, ev.incoming_call_context), call)

    def _open_recorder(self, call: Call, transport: str = "acs") -> None:
        if self.recordings is not None:
            from callbot.recording import CallRecorder

            call.recorder = CallRecorder.open(self.recordings, call.call_id, self.settings,
                                              clock=asyncio.get_running_loop().time, transport=transport,
                                              grid_s=self.registry.pacer.grid_s)

    def _start_bridge(self, call: Call, transport: Transport | None = None,
                      on_hang_up: Callable[[str], Awaitable[None]] | None = None,
                      on_transfer: Callable[[str], Awaitable[None]] | None = None) -> None:
        """Start the call's bridge. `transport` None: an ACS call (hang-up and transfer through ACS); else the
        transport's own `on_hang_up` and `on_transfer` (None: no transfer offered)."""
        assert self.connector is not None

        async def hang_up_at_acs(reason: str) -> None:
            await self._hang_up_at_acs(call, reason)

        async def transfer(reason: str) -> None:
            await self.transfer(call, reason)

        rate = transport.media.sample_rate if transport is not None else self.settings.media_sample_rate
        tools = None
        if self.tools is not None and self.tool_runner is not None:
            tools = CallTools(self.tools, self.tool_runner, CallInfo(call.call_id, call.caller_id, call.correlation_id))
        # an ACS call's transfer goes through ACS, when a target is configured; other transports bring their own
        if transport is None and transfers.transfer_available(self):
            on_transfer = transfer
        local_audio = apology_for(transport.media.audio) if transport is not None else apology(rate)
        observe = call_sink(self.metrics, self.telemetry, call, transport.name if transport is not None else "acs")

        bridge = CallBridge(call.call_id, self.settings, self.connector, tap=call.recorder, apology=local_audio,
                            on_hang_up=traced(call, "hang_up", on_hang_up or hang_up_at_acs), transport=transport,
                            on_transfer=on_transfer and traced(call, "transfer", on_transfer), tools=tools,
                            timings=CallTimings(observe), session_metadata=session_ids(call), pacer=self.registry.pacer)
        call.bridge = bridge
        call.stop_bridge = bridge.stop
        call.end_gracefully = bridge.end_gracefully
        self.registry.spawn(self._run_bridge(call, bridge), call, name=f"bridge-{call.call_id}",
                            context=call.trace.task_context() if call.trace is not None else None)

    async def _run_bridge(self, call: Call, bridge: CallBridge) -> None:
        reason = "cancelled"
        try:
            reason = await bridge.run()
        except Exception:  # a defect in one call's bridge must end that call (no dead air), nothing else
            reason = "bridge_error"
            self.metrics.inc("bridge_errors")
            log.exception("call %s: the bridge failed; hanging up", call.call_id)
            if bridge.on_hang_up is not None:  # the call's own way: ACS, the web page, Twilio's REST API
                await bridge.on_hang_up(reason)
        finally:
            count_bridge(self.metrics, bridge)
            call.stop_bridge = None
            call.end_gracefully = None
            self.registry.bridge_finished(call, reason)
            if call.trace is not None:
                call.trace.end(call.end_reason or reason)
            if call.recorder is not None:
                await call.recorder.close(reason)

    async def _answer(self, call: Call, context: str) -> None:
        assert self.control is not None and self.settings.callbot_public_url
        now = time.time()
        callback_url, transport_url = public_urls(
            self.settings.callbot_public_url, call.call_id,
            self.signer.issue(call.call_id, purpose="callback", expires_at=now + CALLBACK_TOKEN_TTL_S),
            self.signer.issue(call.call_id, purpose="media", expires_at=now + MEDIA_TOKEN_TTL_S),
        )
        if call.recorder is not None:
            call.recorder.rest("answer", {"callback_url": callback_url, "transport_url": transport_url,
                                          "media_format": self.settings.callbot_media_format})
        asked = time.monotonic()
        try:
            connection_id = await self.control.answer(
                context, callback_url=callback_url, transport_url=transport_url,
                media_format=self.settings.callbot_media_format, operation_context=call.call_id,
            )
        except CallControlError as exc:
            self.metrics.inc("answer_failed")
            log.error("call %s: answering failed: %s", call.call_id, exc)
            self.registry.finish(call, "answer_failed")
            return
        call.connection_id = call.connection_id or connection_id
        self.metrics.observe("answer_seconds", time.time() - call.created_at, {"transport": "acs"})
        if call.trace is not None:
            call.trace.child("answer_call", time.monotonic() - asked)
        call.answered.set()
        log.info("call %s: answered, call connection %s", call.call_id, connection_id)
        await asyncio.sleep(MEDIA_CONNECT_TIMEOUT_S)
        if not call.media_connected and not call.ended:
            await self._media_timeout(call)

    async def _media_timeout(self, call: Call) -> None:
        """No media socket here: with several replicas it may have reached another one, which then owns the call.
        Ask ACS: streaming active -> release this replica's session quietly; otherwise the caller would sit in
        silence, so hang up."""
        assert self.control is not None and call.connection_id
        try:
            active = await self.control.media_streaming_active(call.connection_id)
        except CallControlError as exc:
            log.warning("call %s: media state unknown (%s)", call.call_id, exc)
            active = False
        if active:
            log.info("call %s: media is streaming to another replica; releasing this one's session", call.call_id)
            self.registry.finish(call, "media_elsewhere")
        else:
            log.error("call %s: no media socket within %.0f s; hanging up", call.call_id, MEDIA_CONNECT_TIMEOUT_S)
            await self.hang_up(call, "media_timeout")

    def adopt_call(self, call_id: str, connection_id: str | None) -> Call:
        """A media socket with valid tokens for a call this replica did not answer (another replica did, and the
        ingress sent the socket here): take the call over. Its connection id comes from the ACS handshake."""
        call = self.registry.create(caller="(answered by another replica)", call_id=call_id)
        call.connection_id = connection_id
        self.metrics.inc("calls_adopted")
        log.info("call %s: media socket for a call answered elsewhere; adopting it (call connection %s)",
                 call_id, connection_id)
        self._open_recorder(call)
        self._start_bridge(call)
        return call

    def on_call_event(self, call_id: str, call: Call | None, ev: events.CallEvent) -> None:
        result = ""
        if ev.result_code is not None:
            result = f" result {ev.result_code}/{ev.result_sub_code}: {ev.result_message or ''}"
        if call is None:
            # after a normal hang-up ACS still sends CallDisconnected & co: expected, so DEBUG; a call never seen
            # here (another replica's) is worth an INFO line
            level = logging.DEBUG if self.registry.has_ended(call_id) else logging.INFO
            log.log(level, "call %s: %s for a call that is not live here; acknowledged%s", call_id, ev.name, result)
            return
        if call.connection_id is None:
            call.connection_id = ev.call_connection_id
        self.metrics.inc(f"acs_event_{ev.name}" if ev.name in ACS_EVENT_NAMES else "acs_event_other")
        level = logging.WARNING if ev.name.endswith("Failed") else logging.INFO
        log.log(level, "call %s: %s%s", call_id, ev.name, result)
        if ev.name in ("CallTransferAccepted", "CallTransferFailed"):
            transfers.on_transfer_event(self, call, ev)
        elif ev.name == "CallDisconnected" and call.transfer == "accepted":
            # ACS removed callbot's leg after the transfer: the caller talks to a person now; nothing went wrong
            self.registry.finish(call, "transferred")
        elif ev.name == "MediaStreamingFailed":
            # the call is up but no audio flows either way: no apology can reach the caller, so hang up now rather
            # than leave them in silence (ACS could be asked to start streaming again, but a stream that failed
            # to connect once rarely connects on a second try within the seconds a caller waits)
            self.registry.spawn(self.hang_up(call, "media_streaming_failed"), call)
        elif ev.name in CALL_ENDING_EVENTS:
            self.registry.finish(call, ev.name)

    async def transfer(self, call: Call, reason: str) -> None:
        """Transfer the call to `CALLBOT_TRANSFER_TARGET` through ACS (see `callbot.transfers`); `TransferError`
        when that cannot be done. The outcome reaches the bridge's `transfer_outcome` from the ACS callback."""
        await transfers.request_transfer(self, call, reason)

    async def _hang_up_at_acs(self, call: Call, reason: str) -> None:
        for_everyone = transfers.hang_up_scope(call)
        if for_everyone is None:
            log.info("call %s: not hanging up (%s): the call was transferred", call.call_id, reason)
            return
        if call.recorder is not None:
            call.recorder.rest("hang_up", {"reason": reason, **({} if for_everyone else {"for_everyone": False})})
        if self.control is not None and call.connection_id:
            try:
                await self.control.hang_up(call.connection_id, for_everyone=for_everyone)
            except CallControlError as exc:
                log.error("call %s: hang-up failed: %s", call.call_id, exc)

    async def hang_up(self, call: Call, reason: str) -> None:
        await self._hang_up_at_acs(call, reason)
        self.registry.finish(call, reason)

    async def attach_media(self, call: Call, ws: WebSocket) -> None:
        """Hand the call's media socket to its bridge and serve it until the bridge ends."""
        bridge: CallBridge = call.bridge
        call.media_connected = True
        bridge.attach(ws)
        if call.trace is not None:
            call.trace.root.add_event("media_socket_accepted")
        try:
            await bridge.finished.wait()
        finally:
            if not bridge.finished.is_set():  # the server is stopping this handler
                bridge.stop("media handler stopped")
            await _close_quietly(ws)


async def _close_quietly(ws: WebSocket) -> None:
    if ws.application_state != WebSocketState.CONNECTED:
        return
    try:
        await ws.close(code=1000)
    except (WebSocketDisconnect, RuntimeError, OSError):  # the client is gone already
        pass
