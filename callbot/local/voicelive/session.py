"""One Voice Live WebSocket session on the local server: protocol handling and model-playing helpers.

The core does what the service does whatever the model: session config and its validation, input audio
bookkeeping, conversation items, ``response.cancel``, ``conversation.item.truncate`` against the audio
actually sent. What the model *says* is up to the session's :class:`Behaviour`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import logging
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import orjson
from aiohttp import WSMsgType, web
from multidict import CIMultiDictProxy

from callbot.local.voicelive.conversation import Conversation
from callbot.local.voicelive.protocol import (
    OUTPUT_AUDIO_FORMATS,
    PASSIVE_CLIENT_EVENTS,
    ProtocolError,
    default_session,
    error_event,
    input_bytes_per_ms,
    new_id,
    validate_session_update,
)
from callbot.local.voicelive.response import ResponseHandle, stream_response
from callbot.local.voicelive.tools import FunctionCall, check_session_tools

logger = logging.getLogger(__name__)

Event = dict[str, Any]


class Behaviour(Protocol):
    """Plays the model for one session. Must return promptly: long work goes to ``session.spawn``."""

    async def on_event(self, event: Event) -> None:
        """Called for every accepted client event, after the server's default handling."""

    async def on_response_create(self, event: Event) -> None:
        """Called for an accepted ``response.create`` (no response active); usually ``start_response``."""


BehaviourFactory = Callable[["ServerSession"], Behaviour]


class ServerSession:
    """One Voice Live WebSocket: what the client sent, the session state, and helpers to play the model."""

    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        behaviour_factory: BehaviourFactory,
        session_defaults: dict[str, Any],
        *,
        keep_history: bool = True,
    ) -> None:
        self.id = new_id("sess")
        self.keep_history = keep_history  # False: no received/sent/input_audio records (long-running use)
        self.query: dict[str, str] = dict(request.query)
        self.headers: CIMultiDictProxy[str] = request.headers
        self.config: dict[str, Any] = default_session(self.id, self.query, session_defaults)
        self.received: list[Event] = []
        self.received_at: list[float] = []  # time.monotonic() of each entry of ``received``
        self.sent: list[Event] = []
        self.closed = asyncio.Event()
        self.input_audio = bytearray()
        self.last_appended = b""  # decoded audio of the append being handled (for Behaviour.on_event)
        self._input_bytes = 0
        self.conversation = Conversation()
        self.responses: list[ResponseHandle] = []
        self.active_response: ResponseHandle | None = None
        self._request = request
        self._ws = ws
        self._buffer_start = 0  # input byte count where the uncommitted input buffer starts
        self._speech_item_id: str | None = None
        self._changed = asyncio.Condition()
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: dict[str, Callable[[Event], Coroutine[Any, Any, None]]] = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.delete": self._on_item_delete,
            "conversation.item.retrieve": self._on_item_retrieve,
            "conversation.item.truncate": self._on_truncate,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
            "output_audio_buffer.clear": self._on_output_clear,
        }
        self.behaviour: Behaviour = behaviour_factory(self)

    # ----- state ---------------------------------------------------------------------------------
    @property
    def input_audio_bytes(self) -> int:
        return self._input_bytes

    @property
    def input_ms(self) -> float:
        """Milliseconds of input audio received so far, in the session's input format."""
        bpm = input_bytes_per_ms(self.config["input_audio_format"], self.config["input_audio_sampling_rate"])
        return self._input_bytes / bpm

    async def wait_for(self, type: str, *, count: int = 1, timeout: float = 5.0) -> Event:  # noqa: ASYNC109
        """The ``count``-th client event of ``type`` (handled by the server), waiting for it if needed."""
        if not self.keep_history:
            raise RuntimeError("wait_for needs keep_history=True")

        def find() -> Event | None:
            matches = [e for e in self.received if e["type"] == type]
            return matches[count - 1] if len(matches) >= count else None

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: find() is not None or self.closed.is_set())
        except TimeoutError:
            raise TimeoutError(f"client event {type!r} #{count} not received within {timeout}s") from None
        found = find()
        if found is None:
            raise ConnectionError(f"session closed before client event {type!r} #{count}")
        return found

    # ----- I/O -----------------------------------------------------------------------------------
    async def send(self, event: Event) -> None:
        """Send a server event (``event_id`` added when missing). Dropped quietly once the socket is gone."""
        if "event_id" not in event:
            event = {"event_id": new_id("event"), **event}
        if self._ws.closed:
            logger.debug("session %s: socket closed, dropping %s", self.id, event.get("type"))
            return
        data = orjson.dumps(event).decode()
        async with self._send_lock:
            try:
                await self._ws.send_str(data)
            except ConnectionResetError:
                logger.debug("session %s: connection reset, dropping %s", self.id, event.get("type"))
                return
        if self.keep_history:
            self.sent.append(event)

    async def close(self, code: int = 1000) -> None:
        """Graceful close: close frame, then wait (2 s at most) for the client's."""
        await self._ws.close(code=code)
        self.closed.set()

    async def abort(self) -> None:
        """Drop the TCP connection without a close frame (RST), like a network failure."""
        transport = self._request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background for this session; cancelled when the socket ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self) -> None:
        try:
            await self.send({"type": "session.created", "session": copy.deepcopy(self.config)})
            async for msg in self._ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_text(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    await self.send(error_event(ProtocolError("invalid_message", "Binary frames are not supported."),
                                                None))  # fmt: skip
                else:
                    break
        finally:
            self.closed.set()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            async with self._changed:
                self._changed.notify_all()
            logger.debug("session %s ended", self.id)

    async def _on_text(self, data: str) -> None:
        arrived = time.monotonic()
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            await self.send(error_event(ProtocolError("invalid_json", "The event is not valid JSON."), None))
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            err = ProtocolError("missing_required_parameter", "Missing required parameter: 'type'.", param="type")
            await self.send(error_event(err, None))
            return
        client_event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        try:
            handler = self._handlers.get(event["type"])
            if handler is not None:
                await handler(event)
            elif event["type"] not in PASSIVE_CLIENT_EVENTS:
                raise ProtocolError("unknown_event", f"Unknown event type '{event['type']}'.", param="type")
            await self.behaviour.on_event(event)
        except ProtocolError as err:
            await self.send(error_event(err, client_event_id))
        except Exception:  # a broken behaviour must show, not kill the session silently
            logger.exception("session %s: behaviour failed on %s", self.id, event["type"])
            await self.error("server_error", "The server had an error processing the event.", type="server_error")
        finally:
            if self.keep_history:
                self.received.append(event)
                self.received_at.append(arrived)
            async with self._changed:
                self._changed.notify_all()

    # ----- default protocol handling -------------------------------------------------------------
    async def _on_session_update(self, event: Event) -> None:
        update = validate_session_update(event.get("session"))
        check_session_tools(update, self.config)
        self.config.update(update)
        await self.send({"type": "session.updated", "session": copy.deepcopy(self.config)})

    async def _on_append(self, event: Event) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise ProtocolError("missing_required_parameter", "Missing required parameter: 'audio'.", param="audio")
        try:
            self.last_appended = base64.b64decode(audio, validate=True)
        except binascii.Error:
            raise ProtocolError("invalid_value", "Invalid 'audio': expected base64-encoded audio bytes.",
                                param="audio") from None  # fmt: skip
        self._input_bytes += len(self.last_appended)
        if self.keep_history:
            self.input_audio += self.last_appended

    async def _on_commit(self, event: Event) -> None:
        bpm = input_bytes_per_ms(self.config["input_audio_format"], self.config["input_audio_sampling_rate"])
        buffered_ms = (self._input_bytes - self._buffer_start) / bpm
        if buffered_ms < 100:
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {buffered_ms:.2f}ms of audio.",
            )
        await self._commit_user_item(new_id("item"))

    async def _commit_user_item(self, item_id: str) -> None:
        previous, item = self.conversation.add_user_audio(item_id)
        self._buffer_start = self._input_bytes
        await self.send({"type": "input_audio_buffer.committed", "previous_item_id": previous, "item_id": item_id})
        await self.send({"type": "conversation.item.created", "previous_item_id": previous,
                         "item": copy.deepcopy(item)})  # fmt: skip

    async def _on_clear(self, event: Event) -> None:
        self._buffer_start = self._input_bytes
        await self.send({"type": "input_audio_buffer.cleared"})

    async def _on_output_clear(self, event: Event) -> None:
        await self.send({"type": "output_audio_buffer.cleared"})

    async def _on_item_create(self, event: Event) -> None:
        previous, item = self.conversation.create(event.get("item"), event.get("previous_item_id"))
        await self.send({"type": "conversation.item.created", "previous_item_id": previous,
                         "item": copy.deepcopy(item)})  # fmt: skip

    async def _on_item_delete(self, event: Event) -> None:
        item_id = self.conversation.delete(event.get("item_id"))
        await self.send({"type": "conversation.item.deleted", "item_id": item_id})

    async def _on_item_retrieve(self, event: Event) -> None:
        item = self.conversation.get(event.get("item_id"))
        await self.send({"type": "conversation.item.retrieved", "item": copy.deepcopy(item)})

    async def _on_truncate(self, event: Event) -> None:
        self.conversation.truncate(event.get("item_id"), event.get("audio_end_ms"))
        await self.send({"type": "conversation.item.truncated", "item_id": event["item_id"],
                         "content_index": event.get("content_index", 0),
                         "audio_end_ms": event["audio_end_ms"]})  # fmt: skip

    async def _on_response_create(self, event: Event) -> None:
        params = event.get("response") or {}
        if not isinstance(params, dict):
            raise ProtocolError("invalid_type", "Invalid type for 'response'.", param="response")
        fmt = params.get("output_audio_format")
        if fmt is not None and fmt not in OUTPUT_AUDIO_FORMATS:
            raise ProtocolError("invalid_value", f"Invalid value: {fmt!r}.", param="response.output_audio_format")
        if self.active_response is not None:
            if not params.get("cancel_previous"):
                raise ProtocolError(
                    "conversation_already_has_active_response",
                    f"Conversation already has an active response in progress: {self.active_response.response_id}."
                    " Wait until the response is finished before creating a new one.",
                )
            await self._cancel_active("client_cancelled")
        await self.behaviour.on_response_create(event)

    async def _on_response_cancel(self, event: Event) -> None:
        handle = self.active_response
        wanted = event.get("response_id")
        if handle is None or (wanted and wanted != handle.response_id):
            raise ProtocolError("response_cancel_not_active", "Cancellation failed: no active response found")
        await self._cancel_active("client_cancelled")

    async def _cancel_active(self, reason: str) -> None:
        handle = self.active_response
        if handle is not None:
            handle.request_cancel(reason)
            await handle.wait(timeout=5.0)

    # ----- scripting helpers: play the model ----------------------------------------------------
    async def start_response(
        self,
        *,
        text: str = "",
        audio: bytes,
        chunk_ms: int = 100,
        realtime_factor: float = 0.0,
        items: int = 1,
        output_audio_format: str | None = None,
        calls: tuple[FunctionCall, ...] = (),
    ) -> ResponseHandle:
        """Send ``response.created`` now and stream the rest in the background (see ``stream_response``).

        ``audio`` is in the response's output format (the session's unless given). ``realtime_factor``
        1.0 paces deltas at real time, 0 sends as fast as possible. Empty ``audio`` makes a text response.
        ``calls`` follow the ``items`` message items (``items=0``: a response of function calls only).
        """
        if self.active_response is not None:
            raise RuntimeError(f"response {self.active_response.response_id} is still in progress")
        handle = ResponseHandle(
            new_id("resp"), [new_id("item") for _ in range(items)], output_audio_format or
            self.config["output_audio_format"], calls,
        )  # fmt: skip
        self.active_response = handle
        self.responses.append(handle)
        await self.send({"type": "response.created", "response": handle.as_response(self.config)})
        handle.task = self.spawn(stream_response(self, handle, text, audio, chunk_ms, realtime_factor))
        return handle

    async def speech_started(self, audio_start_ms: int | None = None, item_id: str | None = None) -> str:
        """``input_audio_buffer.speech_started``; cancels the active response when turn detection says so."""
        item_id = item_id or new_id("item")
        self._speech_item_id = item_id
        start = int(self.input_ms) if audio_start_ms is None else audio_start_ms
        await self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": start, "item_id": item_id})
        turn = self.config.get("turn_detection")
        if turn and turn.get("interrupt_response", True):
            await self._cancel_active("turn_detected")
        return item_id

    async def speech_stopped(
        self, audio_end_ms: int | None = None, item_id: str | None = None, *, commit: bool = True
    ) -> str:
        """``input_audio_buffer.speech_stopped``; with ``commit``, the user item is committed and created."""
        item_id = item_id or self._speech_item_id or new_id("item")
        self._speech_item_id = None
        end = int(self.input_ms) if audio_end_ms is None else audio_end_ms
        await self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end, "item_id": item_id})
        if commit:
            await self._commit_user_item(item_id)
        return item_id

    async def transcription_completed(self, item_id: str, transcript: str) -> None:
        self.conversation.set_input_transcript(item_id, transcript)
        await self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
                         "content_index": 0, "transcript": transcript})  # fmt: skip

    async def error(
        self, code: str, message: str, type: str = "invalid_request_error", *, param: str | None = None
    ) -> None:
        await self.send(error_event(ProtocolError(code, message, param=param, type=type), None))
