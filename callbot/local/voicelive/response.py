"""Streaming one scripted model response the way Voice Live does, with cancellation.

Event order per response: ``response.created`` (sent by ``ServerSession.start_response``), then per item
``response.output_item.added``, ``conversation.item.created``, ``response.content_part.added``,
(``response.audio_transcript.delta`` + ``response.audio.delta``)*, ``response.audio.done``,
``response.audio_transcript.done``, ``response.content_part.done``, ``response.output_item.done``;
then the function calls (:mod:`callbot.local.voicelive.tools`); finally ``response.done``. A cancel stops the
deltas at once; the open item is closed as ``incomplete`` and ``response.done`` carries ``status: "cancelled"``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

from callbot.local.voicelive.protocol import (
    assistant_item,
    output_bytes_per_ms,
    response_object,
    sample_width,
    split_evenly,
    split_text,
)
from callbot.local.voicelive.tools import FunctionCall, stream_function_call

if TYPE_CHECKING:
    from callbot.local.voicelive.session import ServerSession

Event = dict[str, Any]


class ResponseHandle:
    """A response being streamed by the server; ``await handle`` waits for its ``response.done``."""

    def __init__(
        self, response_id: str, item_ids: list[str], output_audio_format: str, calls: tuple[FunctionCall, ...] = ()
    ) -> None:
        self.response_id = response_id
        self.item_ids = item_ids
        self.calls = calls  # function calls, after the message items
        self.output_audio_format = output_audio_format
        self.done = asyncio.Event()
        self.status = "in_progress"
        self.cancelled = False
        self.cancel_reason: str | None = None
        self.audio_bytes_sent_per_item: dict[str, int] = dict.fromkeys(item_ids, 0)
        self.audio_ms_sent_per_item: dict[str, float] = dict.fromkeys(item_ids, 0.0)
        self.transcript_sent_per_item: dict[str, str] = dict.fromkeys(item_ids, "")
        self.output: list[Event] = []
        self.task: asyncio.Task[Any] | None = None
        self._cancel = asyncio.Event()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def request_cancel(self, reason: str = "client_cancelled") -> None:
        """Stop streaming deltas; ``response.done`` with status ``cancelled`` follows."""
        if not self.done.is_set() and not self._cancel.is_set():
            self.cancel_reason = reason
            self._cancel.set()

    async def wait(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - convenience for tests
        async with asyncio.timeout(timeout):
            await self.done.wait()

    def __await__(self) -> Generator[Any, None, bool]:
        return self.done.wait().__await__()

    def as_response(self, session: Mapping[str, Any]) -> Event:
        return response_object(
            self.response_id,
            status=self.status,
            output=copy.deepcopy(self.output),
            session=session,
            output_audio_format=self.output_audio_format,
            reason=self.cancel_reason,
        )


async def stream_response(
    session: ServerSession, handle: ResponseHandle, text: str, audio: bytes, chunk_ms: int, realtime_factor: float
) -> None:
    """Stream ``text`` / ``audio`` split over the handle's message items, then its function calls; always ends
    with ``response.done``."""
    width = sample_width(handle.output_audio_format)
    parts = len(handle.item_ids)
    audio_parts = split_evenly(audio, parts, width) if parts else []
    text_parts = split_text(text, parts) if parts else []
    try:
        for index, item_id in enumerate(handle.item_ids):
            if handle.cancel_requested:
                break
            item = await _stream_item(
                session, handle, index, item_id, text_parts[index], audio_parts[index] if audio else None,
                chunk_ms, realtime_factor,
            )  # fmt: skip
            handle.output.append(item)
        for index, call in enumerate(handle.calls, start=parts):
            if handle.cancel_requested:
                break
            handle.output.append(await stream_function_call(session, handle, index, call))
        handle.cancelled = handle.cancel_requested
        handle.status = "cancelled" if handle.cancelled else "completed"
        if session.active_response is handle:  # from here on, response.cancel finds nothing to cancel
            session.active_response = None
        await session.send({"type": "response.done", "response": handle.as_response(session.config)})
    finally:
        if session.active_response is handle:
            session.active_response = None
        handle.done.set()


async def _stream_item(
    session: ServerSession,
    handle: ResponseHandle,
    index: int,
    item_id: str,
    text: str,
    audio: bytes | None,
    chunk_ms: int,
    realtime_factor: float,
) -> Event:
    ids = {"response_id": handle.response_id, "item_id": item_id, "output_index": index, "content_index": 0}
    is_audio = audio is not None
    item = assistant_item(item_id, status="in_progress", transcript=None, audio=is_audio)
    previous = session.conversation.put(item)
    if is_audio:
        session.conversation.audio_ms[item_id] = 0.0
    await session.send({"type": "response.output_item.added", "response_id": handle.response_id,
                        "output_index": index, "item": copy.deepcopy(item)})  # fmt: skip
    await session.send({"type": "conversation.item.created", "previous_item_id": previous,
                        "item": copy.deepcopy(item)})  # fmt: skip
    empty_part = {"type": "audio", "transcript": ""} if is_audio else {"type": "text", "text": ""}
    await session.send({"type": "response.content_part.added", **ids, "part": empty_part})
    if audio is not None:
        sent = await _stream_audio(session, handle, ids, text, audio, chunk_ms, realtime_factor)
        await session.send({"type": "response.audio.done", **ids})
        await session.send({"type": "response.audio_transcript.done", **ids, "transcript": sent})
    else:
        sent = await _stream_text(session, handle, ids, text)
        await session.send({"type": "response.text.done", **ids, "text": sent})
    status = "incomplete" if handle.cancel_requested else "completed"
    final = assistant_item(item_id, status=status, transcript=sent, audio=is_audio)
    session.conversation.put(final)
    await session.send({"type": "response.content_part.done", **ids, "part": copy.deepcopy(final["content"][0])})
    await session.send({"type": "response.output_item.done", "response_id": handle.response_id,
                        "output_index": index, "item": copy.deepcopy(final)})  # fmt: skip
    return final


async def _stream_audio(
    session: ServerSession,
    handle: ResponseHandle,
    ids: Event,
    text: str,
    audio: bytes,
    chunk_ms: int,
    realtime_factor: float,
) -> str:
    """Audio deltas of ``chunk_ms`` each, transcript deltas spread along; returns the transcript sent."""
    item_id = ids["item_id"]
    bpm = output_bytes_per_ms(handle.output_audio_format)
    width = sample_width(handle.output_audio_format)
    chunk_bytes = max(width, chunk_ms * bpm // width * width)
    chunks = [audio[i : i + chunk_bytes] for i in range(0, len(audio), chunk_bytes)]
    sent = ""
    for number, chunk in enumerate(chunks, start=1):
        if handle.cancel_requested:
            break
        target = text[: round(len(text) * number / len(chunks))]
        if len(target) > len(sent):
            await session.send({"type": "response.audio_transcript.delta", **ids, "delta": target[len(sent) :]})
            sent = target
            handle.transcript_sent_per_item[item_id] = sent
        await session.send({"type": "response.audio.delta", **ids, "delta": base64.b64encode(chunk).decode()})
        handle.audio_bytes_sent_per_item[item_id] += len(chunk)
        handle.audio_ms_sent_per_item[item_id] += len(chunk) / bpm
        session.conversation.audio_ms[item_id] += len(chunk) / bpm
        await _pace(handle, len(chunk) / bpm / 1000 * realtime_factor)
    return sent


async def _stream_text(session: ServerSession, handle: ResponseHandle, ids: Event, text: str) -> str:
    sent = ""
    for word in text.split(" ") if text else []:
        if handle.cancel_requested:
            break
        delta = word if not sent else " " + word
        await session.send({"type": "response.text.delta", **ids, "delta": delta})
        sent += delta
        handle.transcript_sent_per_item[ids["item_id"]] = sent
        await asyncio.sleep(0)
    return sent


async def _pace(handle: ResponseHandle, seconds: float) -> None:
    """Wait ``seconds`` (0: just yield), cut short by a cancel."""
    if seconds <= 0:
        await asyncio.sleep(0)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await handle._cancel.wait()
