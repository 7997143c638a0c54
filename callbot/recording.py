"""Call recordings: every message at a call's wire boundaries, one JSON Lines file (or blob) per call.

Line 1 is a header: ``{"format": "callbot-recording", "version": 1, "call_id", "started_at", "transport",
"settings"}`` (the call's transport, ``acs``, ``web`` or ``twilio``, absent in older recordings: ``acs``; the applied
settings, secrets replaced by ``"<set>"``; ``playout_grid``, ``{"ms", "phase_ms"}``: the process's playout clock
releases bot audio on a grid, at ``phase_ms`` modulo ``ms`` on the recording's clock; absent in older recordings and
where the bridge had a clock of its own). ``acs_in`` / ``acs_out`` are the caller's side of the call on whatever
transport. Every other line is one message::

    {"t": 1234.567, "dir": "acs_in", "kind": "AudioData", "text": "{...the raw media message...}"}

``t`` is milliseconds since the header on the recorder's monotonic clock (the bridge's clock when the caller passes
``loop.time``). ``dir`` is where the message went:

- ``acs_in``  ACS -> callbot: media messages (``text``, or ``bytes`` base64 for binary frames), ``incoming_call``
  (``event``), ``callback`` (``events``);
- ``acs_out`` callbot -> ACS: media messages (``text``: AudioData, StopAudio), ``rest`` (``op``, ``detail``);
- ``vl_out``  callbot -> Voice Live: client events (``event``; ``kind`` is its type);
- ``vl_in``   Voice Live -> callbot: server events (``event``);
- ``meta``    what the bridge did between messages, so a replay can do the same at the same time:
  ``voicelive_open`` (a connection opened; written just before its ``session.update``), ``voicelive_closed``
  (the core re-sends the caller audio the model had not committed; older recordings carry ``unsent``, the audio
  then handed back, which replay ignores: the core's ring holds it), ``end_call`` (``reason``, ``local_audio``
  base64), ``tool_result`` (``call_id``, ``name``, ``output``, ``outcome``: an operator tool's answer),
  ``transfer_outcome`` (``accepted``, ``detail``), and ``end`` (the recorder was closed; ``reason``).

Audio stays base64 inside the messages, so nothing is lost. Tokens in URLs, ``incomingCallContext`` and
authorization values are redacted.

The tap methods only serialise and append to a buffer; a background task writes batches to the recording's sink
(`callbot.recording_store`: a file through ``asyncio.to_thread``, or an Azure append blob), so the audio path never
waits for storage. A file write error (full disk) is logged once and the call goes on unrecorded; a blob storage
outage is buffered and retried for up to 30 s (nothing lost when storage comes back), then the recording stops with
an error line: what was stored stays, the call goes on.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from callbot.config import Settings
from callbot.recording_file import (
    ACS_IN,
    ACS_OUT,
    DIRECTIONS,
    FORMAT,
    META,
    VERSION,
    VL_IN,
    VL_OUT,
    Record,
    Recording,
    RecordingError,
    load_recording,
    parse_recording,
)
from callbot.recording_store import BlobStore, FileSink, RecordingSink, SinkError

__all__ = ["ACS_IN", "ACS_OUT", "DIRECTIONS", "FORMAT", "META", "VERSION", "VL_IN", "VL_OUT", "CallRecorder", "Record",
           "Recording", "RecordingError", "header_settings", "load_recording", "parse_recording", "redact"]

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.25
FLUSH_BYTES = 256 * 1024
MAX_BUFFER_BYTES = 64 * 1024 * 1024  # the storage is stalled beyond this: stop recording rather than eat memory
REDACTED = "<redacted>"
SECRET_KEYS = frozenset({  # compared lower-cased without "_" and "-"
    "incomingcallcontext", "authorization", "token", "accesstoken", "secret", "accesskey", "apikey", "password",
    "signature", "sig", "connectionstring", "signingkey", "webhooksecret",
})
_SECRET_QUERY = re.compile(r"(?i)([?&](?:token|secret|sig|signature|code|access_token|api-key|api_key)=)[^&#\s\"']*")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def redact(value: Any) -> Any:
    """A copy of `value` with secret-named keys and secret URL query values replaced by ``<redacted>``."""
    if isinstance(value, dict):
        return {k: REDACTED if v and isinstance(k, str) and _key(k) in SECRET_KEYS
                else {name: REDACTED for name in v} if k == "headers" and isinstance(v, dict)  # MCP servers' headers
                else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str) and "=" in value:
        return _SECRET_QUERY.sub(r"\1" + REDACTED, value)
    return value


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def header_settings(settings: Settings) -> dict[str, Any]:
    """The settings as recorded: `public_dict()` plus the instructions actually applied (file read once)."""
    values = settings.public_dict()
    if settings.callbot_instructions_file is not None:
        try:
            values["callbot_instructions"] = settings.instructions()
        except OSError as exc:
            log.warning("recording: instructions file unreadable (%s)", exc.strerror or type(exc).__name__)
    return values


class CallRecorder:
    """Implements the bridge's `WireTap` plus the call-control events. Create with `open`, end with `close`."""

    def __init__(self, sink: RecordingSink, call_id: str, header: dict[str, Any],
                 clock: Callable[[], float] = time.monotonic, grid_s: float | None = None) -> None:
        self.call_id = call_id
        self._sink = sink
        self._clock = clock
        self._t0 = clock()
        if grid_s is not None:  # the playout clock's grid on this clock, so that a replay releases chunks as live did
            header = {**header, "playout_grid": {"ms": grid_s * 1000, "phase_ms": self._t0 % grid_s * 1000}}
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._pending = 0  # taken from the buffer by the writer, not stored yet (a storage outage)
        self._failed = self._closing = self._closed = False
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self.lines = self.dropped = 0
        self._append(orjson.dumps({"format": FORMAT, "version": VERSION, "call_id": call_id, **header}))

    @property
    def path(self) -> Path | None:
        """The file, for a recording in `CALLBOT_RECORDINGS_DIR` (None for a blob)."""
        return self._sink.path if isinstance(self._sink, FileSink) else None

    @property
    def location(self) -> str:
        """The file's path or the blob's URL (no secret in either)."""
        return self._sink.location

    @classmethod
    def open(cls, destination: Path | BlobStore, call_id: str, settings: Settings, *,
             clock: Callable[[], float] = time.monotonic, transport: str = "acs",
             grid_s: float | None = None) -> CallRecorder | None:
        """Record to ``<destination>/<UTC time>Z-<call id>.jsonl``: a new file (mode 0600) in a directory, or an
        append blob in the store's container (created by the first write). None, with one error log, if a file
        cannot be created. `grid_s`: the grid of the process's playout clock (`Pacer`), which reads `clock`."""
        started = datetime.now(UTC)
        name = f"{started:%Y%m%dT%H%M%S}Z-{_SAFE_NAME.sub('_', call_id)[:80]}.jsonl"
        sink: RecordingSink
        if isinstance(destination, BlobStore):
            sink = destination.sink(name)
        else:
            try:
                sink = FileSink.create(Path(destination) / name)
            except OSError as exc:
                log.error("call %s: not recorded: cannot create a file in %s (%s)", call_id, destination,
                          exc.strerror or type(exc).__name__)
                return None
        header = {"started_at": started.isoformat(timespec="milliseconds"), "transport": transport,
                  "settings": header_settings(settings)}
        return cls(sink, call_id, header, clock, grid_s)

    # -- the wire tap (synchronous: serialise and buffer, never I/O) ---------------------------------------------

    def acs_in(self, raw: str | bytes) -> None:
        self._media(ACS_IN, raw)

    def acs_out(self, raw: str | bytes) -> None:
        self._media(ACS_OUT, raw)

    def vl_out(self, event: dict[str, Any]) -> None:
        if event.get("type") == "session.update":  # only `session_opened` sends it: a connection just opened
            self.marker("voicelive_open")
            event = redact(event)  # the operator's MCP servers' headers (secrets under any name)
        self._put(VL_OUT, str(event.get("type")), {"event": event})

    def vl_in(self, event: dict[str, Any]) -> None:
        self._put(VL_IN, str(event.get("type")), {"event": event})

    # -- bridge decisions that are not messages (call right before the matching `BridgeCore` call) ----------------

    def voicelive_closed(self) -> None:
        """The Voice Live connection ended or failed to open: the bridge calls `session_lost(now)`."""
        self.marker("voicelive_closed")

    def media_opened(self) -> None:
        """The ACS media socket was attached: the bridge calls `media_started(now)`."""
        self.marker("media_open")

    def end_call(self, reason: str, local_audio: bytes = b"") -> None:
        """The bridge ends the call on purpose: `end_call(now, reason, local_audio=...)`."""
        self.marker("end_call", reason=reason,
                    local_audio=binascii.b2a_base64(local_audio, newline=False).decode("ascii"))

    def agent(self, can_transfer: bool, tools: list[dict[str, Any]]) -> None:
        """What the agent can do on this call (replay builds the same session): transfer, the operator's tools."""
        self.marker("agent", can_transfer=can_transfer, tools=redact(tools))

    def tool_result(self, call_id: str, name: str, output: str, outcome: str) -> None:
        """An operator tool answered: the bridge calls `tool_result(now, call_id, output)` (replay feeds the
        recorded output back instead of calling the tool again)."""
        self._put(META, "tool_result", {"call_id": call_id, "name": name, "output": output, "outcome": outcome})

    def transfer_outcome(self, accepted: bool, detail: str) -> None:
        """ACS answered a transfer: the bridge calls `transfer_outcome(now, accepted, detail)`."""
        self.marker("transfer_outcome", accepted=accepted, detail=detail)

    # -- call control ------------------------------------------------------------------------------------------

    def incoming_call(self, event: dict[str, Any]) -> None:
        self._put(ACS_IN, "incoming_call", {"event": redact(event)})

    def callback(self, events: list[Any] | dict[str, Any]) -> None:
        self._put(ACS_IN, "callback", {"events": redact(events if isinstance(events, list) else [events])})

    def rest(self, operation: str, detail: dict[str, Any]) -> None:
        self._put(ACS_OUT, "rest", {"op": operation, "detail": redact(detail)})

    def marker(self, name: str, **detail: Any) -> None:
        self._put(META, name, detail)

    # -- buffering ---------------------------------------------------------------------------------------------

    def _media(self, direction: str, raw: str | bytes) -> None:
        if isinstance(raw, str):
            self._put(direction, _media_kind(raw), {"text": raw})
        else:
            self._put(direction, "binary", {"bytes": binascii.b2a_base64(raw, newline=False).decode("ascii")})

    def _put(self, direction: str, kind: str, payload: dict[str, Any]) -> None:
        if self._failed or self._closed:
            return
        t = round((self._clock() - self._t0) * 1000, 3)
        try:
            line = orjson.dumps({"t": t, "dir": direction, "kind": kind, **payload})
        except TypeError:
            self.dropped += 1
            log.warning("call %s: a %s %s message could not be recorded", self.call_id, direction, kind)
            return
        self._append(line)

    def _append(self, line: bytes) -> None:
        if self._buffered + self._pending > MAX_BUFFER_BYTES:
            self._fail("the storage does not keep up")
            return
        self._buffer.append(line)
        self._buffered += len(line) + 1
        self.lines += 1
        self._ensure_writer()
        if self._wake is not None and self._buffered >= FLUSH_BYTES:
            self._wake.set()

    def _ensure_writer(self) -> None:
        if self._writer is not None or self._closing:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: `close` writes everything
        self._wake = asyncio.Event()
        self._writer = loop.create_task(self._write_loop(), name=f"recorder-{self.call_id[:12]}")

    def _take(self) -> bytes:
        if not self._buffer:
            return b""
        data = b"\n".join(self._buffer) + b"\n"
        self._buffer.clear()
        self._buffered = 0
        return data

    def _fail(self, reason: str) -> None:
        if not self._failed:
            self._failed = True
            log.error("call %s: recording stopped (%s); the call goes on", self.call_id, reason)
        self._buffer.clear()
        self._buffered = self._pending = 0

    # -- writing (off the audio path: the sink's I/O runs in this task, files in a worker thread) ----------------

    async def _write_loop(self) -> None:
        assert self._wake is not None
        sink, pending, down_since = self._sink, b"", None
        while not self._closing and not self._failed:
            try:  # while the storage is down, retry every second at most (each try may take its timeout)
                await asyncio.wait_for(self._wake.wait(), sink.flush_interval_s if down_since is None else 1.0)
            except TimeoutError:
                pass
            self._wake.clear()
            pending += self._take()
            self._pending = len(pending)
            if not pending or self._failed:
                continue
            try:
                await sink.write(pending)
            except SinkError as exc:
                now = time.monotonic()
                if down_since is None and sink.outage_s > 0:
                    down_since = now
                    log.error("call %s: recording: %s; buffering for up to %.0f s; the call goes on", self.call_id,
                              exc, sink.outage_s)
                if down_since is None or now - down_since >= sink.outage_s:
                    self._fail(str(exc) if down_since is None else f"{exc}; storage down for {now - down_since:.0f} s")
                continue
            if down_since is not None:
                log.warning("call %s: recording: storage is back after %.1f s; nothing lost", self.call_id,
                            time.monotonic() - down_since)
            pending, down_since, self._pending = b"", None, 0
        await self._finish(pending)

    async def _finish(self, pending: bytes) -> None:
        """The last write (what is left, with the `end` marker) and the sink's close."""
        data = b"" if self._failed else pending + self._take()
        self._pending = 0
        if data:
            try:
                await self._sink.write(data)
            except SinkError as exc:
                self._fail(str(exc))
        await self._sink.close()

    async def close(self, reason: str = "") -> None:
        """Write what is buffered plus an ``end`` marker and close the sink. Safe to call twice or when cancelled
        (the final write completes in its task)."""
        if self._closed:
            return
        self.marker("end", reason=reason)
        self._closed = True
        self._closing = True
        writer = self._writer
        if writer is not None and not writer.done():
            assert self._wake is not None
            self._wake.set()
            await asyncio.wait({writer})  # our cancellation does not cancel the writer: it still closes the sink
        if writer is None or writer.cancelled():  # no writer ran, or it was cancelled (loop shutdown)
            await asyncio.shield(self._finish(b""))
        if self._failed:
            log.warning("call %s: recording %s is incomplete", self.call_id, self.location)
        else:
            log.info("call %s: recording written to %s (%d lines)", self.call_id, self.location, self.lines)


def _media_kind(text: str) -> str:
    """`AudioData`, `StopAudio`, ... read from the message's start without parsing it (cheap on the hot path)."""
    for prefix in ('{"kind":"', '{"Kind":"', '{"event":"'):  # ACS, ACS, Twilio
        if text.startswith(prefix):
            end = text.find('"', len(prefix))
            if 0 < end - len(prefix) <= 32:
                return text[len(prefix):end]
    return "media"
