"""Reading call recordings (the format is described in `callbot.recording`, which writes them)."""

from __future__ import annotations

import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from callbot.audio.formats import MEDIA_FORMATS
from callbot.config import Settings

FORMAT = "callbot-recording"
VERSION = 1
ACS_IN, ACS_OUT, VL_OUT, VL_IN, META = "acs_in", "acs_out", "vl_out", "vl_in", "meta"
DIRECTIONS = frozenset({ACS_IN, ACS_OUT, VL_OUT, VL_IN, META})


class RecordingError(ValueError):
    """The file is not a callbot recording this version can read."""


@dataclass(frozen=True, slots=True)
class Record:
    """One message line: `t` in ms, `dir`, `kind` and the whole line as `data`."""

    t: float
    dir: str
    kind: str
    data: dict[str, Any]

    @property
    def event(self) -> dict[str, Any]:
        event = self.data.get("event")
        return event if isinstance(event, dict) else {}

    def media(self) -> str | bytes | None:
        """The raw media message of an ACS media line (None for other lines)."""
        if self.dir not in (ACS_IN, ACS_OUT):
            return None
        text = self.data.get("text")
        if isinstance(text, str):
            return text
        raw = self.data.get("bytes")
        if isinstance(raw, str):
            return binascii.a2b_base64(raw)
        return None


@dataclass
class Recording:
    header: dict[str, Any]
    records: list[Record] = field(default_factory=list)
    path: Path | None = None
    truncated: bool = False  # the last line was cut short (the process died mid-write)

    @property
    def call_id(self) -> str:
        return str(self.header.get("call_id", ""))

    @property
    def transport(self) -> str:
        return str(self.header.get("transport") or "acs")

    @property
    def playout_grid(self) -> tuple[float, float] | None:
        """(grid, phase) in seconds of the playout clock that released the call's bot audio; None: no grid (older
        recordings, a bridge with a clock of its own, a malformed header)."""
        grid = self.header.get("playout_grid")
        if not isinstance(grid, dict):
            return None
        ms, phase = grid.get("ms"), grid.get("phase_ms")
        if not isinstance(ms, int | float) or not isinstance(phase, int | float) or not 0 < ms <= 1000:
            return None
        return ms / 1000, phase / 1000 % (ms / 1000)

    @property
    def sample_rate(self) -> int:
        if self.transport == "web":
            return MEDIA_FORMATS["pcm24k"].sample_rate
        if self.transport == "twilio":  # the wire's (what the caller heard), whatever the model's audio was
            return MEDIA_FORMATS["ulaw8k"].sample_rate
        fmt = self.header.get("settings", {}).get("callbot_media_format", "pcm24k")
        return MEDIA_FORMATS.get(fmt, MEDIA_FORMATS["pcm24k"]).sample_rate

    @property
    def duration_ms(self) -> float:
        return max((r.t for r in self.records), default=0.0)

    def settings(self) -> Settings:
        """The recorded settings as a `Settings` (secrets unset; instructions as recorded; no environment)."""
        values = {k: v for k, v in self.header.get("settings", {}).items() if k in Settings.model_fields}
        for name, value in list(values.items()):
            if value == "<set>":
                values[name] = None
        values["callbot_instructions_file"] = None
        values["callbot_recordings_dir"] = None
        values.setdefault("callbot_playback_chunk_ms", 20)  # recorded before the setting existed: 20 ms messages
        try:
            return Settings(_env_file=None, **values)  # type: ignore[call-arg]
        except ValidationError as exc:
            raise RecordingError(f"the recorded settings are not valid now: {exc.error_count()} problem(s), "
                                 f"first: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None


def parse_recording(lines: Iterable[bytes], path: Path | None = None) -> Recording:
    """Parse recording lines; a cut-short last line (the call died mid-write) is skipped and flagged."""
    recording: Recording | None = None
    pending_error: str | None = None
    name = path.name if path is not None else "recording"
    for number, line in enumerate(lines, start=1):
        if pending_error is not None:  # a bad line that is not the last one
            raise RecordingError(pending_error)
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            pending_error = f"{name}:{number}: not JSON"
            continue
        if recording is None:
            if not isinstance(obj, dict) or obj.get("format") != FORMAT:
                raise RecordingError(f"{name}: not a callbot recording (no {FORMAT!r} header)")
            if obj.get("version") != VERSION:
                raise RecordingError(f"{name}: recording format version {obj.get('version')!r}, expected {VERSION}")
            recording = Recording(header=obj, path=path)
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("t"), int | float) or obj.get("dir") not in DIRECTIONS:
            raise RecordingError(f"{name}:{number}: not a recording line (needs t, dir)")
        recording.records.append(Record(float(obj["t"]), obj["dir"], str(obj.get("kind", "")), obj))
    if recording is None:
        raise RecordingError(f"{name}: empty file")
    recording.truncated = pending_error is not None
    return recording


def load_recording(path: str | Path) -> Recording:
    """Read a recording file, or a blob given its URL (blocking: from async code, use
    `asyncio.to_thread(load_recording, path)`). Raises OSError (a `SinkError` for a blob) or RecordingError."""
    from callbot.recording_store import is_blob_url, read_location

    if is_blob_url(path):
        return parse_recording(read_location(path).splitlines(keepends=True))
    path = Path(path)
    with path.open("rb") as fh:
        return parse_recording(fh, path)
