"""The call recorder: file format, secrets, writing off the hot path, failures that must not end the call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from callbot.acs import media
from callbot.bridge.core import CoreConfig
from callbot.config import Settings
from callbot.recording import CallRecorder, RecordingError, load_recording
from callbot.recording_store import FileSink

API_KEY = "vl-key-that-must-never-be-written-0123"
SIGNING_KEY = "signing-key-that-must-never-be-written"


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"azure_voicelive_api_key": API_KEY, "callbot_signing_key": SIGNING_KEY,
                                 "callbot_media_format": "pcm16k", "callbot_greeting": "Hi there"}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def stepping_clock(step: float = 0.005) -> Callable[[], float]:
    """A clock that advances `step` seconds per reading, starting at 100 s."""
    state = {"now": 100.0 - step}

    def clock() -> float:
        state["now"] += step
        return state["now"]
    return clock


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


async def test_each_call_writes_a_header_then_every_wire_message_in_order_with_direction_and_time(
        tmp_path: Path) -> None:
    rec = CallRecorder.open(tmp_path, "call-1", settings(), clock=stepping_clock())
    assert rec is not None
    frame = media.encode_audio_bytes(bytes(640))
    caller = '{"kind":"AudioData","audioData":{"data":"AAAA","silent":false}}'
    rec.acs_in(caller)
    rec.vl_out({"type": "session.update", "session": {"voice": {"name": "alloy"}}})
    rec.vl_in({"type": "session.updated", "event_id": "event_1"})
    rec.vl_out({"type": "input_audio_buffer.append", "audio": "AAAA"})
    rec.acs_out(frame)
    rec.acs_out(media.STOP_AUDIO)
    rec.acs_in(b"\x00\x01binary")
    await rec.close("caller_hung_up")

    recording = load_recording(rec.path)
    assert rec.path.parent == tmp_path and rec.path.name.endswith("-call-1.jsonl")
    assert recording.header["format"] == "callbot-recording" and recording.header["version"] == 1
    assert recording.call_id == "call-1"
    assert recording.header["started_at"].endswith("+00:00")
    assert recording.header["settings"]["callbot_greeting"] == "Hi there"
    assert recording.header["settings"]["azure_voicelive_api_key"] == "<set>"
    assert recording.sample_rate == 16000
    seen = [(r.dir, r.kind) for r in recording.records]
    assert seen == [
        ("acs_in", "AudioData"), ("meta", "voicelive_open"), ("vl_out", "session.update"),
        ("vl_in", "session.updated"), ("vl_out", "input_audio_buffer.append"), ("acs_out", "AudioData"),
        ("acs_out", "StopAudio"), ("acs_in", "binary"), ("meta", "end"),
    ]
    times = [r.t for r in recording.records]
    assert times == sorted(times) and times[0] == pytest.approx(5.0) and times[1] - times[0] == pytest.approx(5.0)
    assert recording.records[0].media() == caller  # raw text kept exactly, audio stays base64
    assert recording.records[5].media() == frame
    assert recording.records[7].media() == b"\x00\x01binary"
    assert recording.records[3].event == {"type": "session.updated", "event_id": "event_1"}
    assert recording.records[-1].data["reason"] == "caller_hung_up"
    assert rec.path.stat().st_mode & 0o077 == 0, "recordings hold callers' voices: owner-only file"


async def test_no_secret_reaches_the_file(tmp_path: Path) -> None:
    rec = CallRecorder.open(tmp_path, "c2", settings(acs_connection_string="endpoint=http://x/;accesskey=QUNTS0VZ"))
    assert rec is not None
    rec.incoming_call({"eventType": "Microsoft.Communication.IncomingCall",
                       "data": {"incomingCallContext": "CONTEXT-SECRET", "from": {"rawId": "4:+1425"}}})
    rec.rest("answer", {"callback_url": "https://bot.example/api/callbacks/c2?token=CB.TOKEN.SIG",
                        "transport_url": "wss://bot.example/ws/media/c2?token=MEDIA.TOKEN&x=1",
                        "media_format": "pcm16k", "incoming_call_context": "CONTEXT-SECRET"})
    rec.callback([{"type": "Microsoft.Communication.CallConnected", "data": {"callConnectionId": "cc-1"}}])
    rec.callback({"type": "Microsoft.Communication.CallDisconnected", "data": {"callConnectionId": "cc-1"}})
    await rec.close()
    text = rec.path.read_text()
    for secret in (API_KEY, SIGNING_KEY, "QUNTS0VZ", "CONTEXT-SECRET", "CB.TOKEN.SIG", "MEDIA.TOKEN"):
        assert secret not in text
    records = load_recording(rec.path).records
    detail = records[1].data["detail"]
    assert detail["callback_url"] == "https://bot.example/api/callbacks/c2?token=<redacted>"
    assert detail["transport_url"] == "wss://bot.example/ws/media/c2?token=<redacted>&x=1"
    assert (records[0].dir, records[0].kind, records[1].dir, records[1].data["op"]) == (
        "acs_in", "incoming_call", "acs_out", "answer")
    assert records[0].data["event"]["data"]["from"] == {"rawId": "4:+1425"}
    assert [len(r.data["events"]) for r in records[2:4]] == [1, 1]


async def test_tap_calls_only_buffer_and_a_background_task_writes_while_the_call_goes_on(tmp_path: Path) -> None:
    rec = CallRecorder.open(tmp_path, "c3", settings())
    assert rec is not None
    for i in range(20):
        rec.acs_in(media.encode_audio(f"AAA{i % 10}"))
    assert rec.path.stat().st_size == 0, "the tap must not write on the audio path"
    await wait_until(lambda: len(lines(rec.path)) == 21)  # header + 20, flushed without closing
    rec.acs_in(media.encode_audio("BBBB"))
    await rec.close()
    assert len(lines(rec.path)) == 23
    await rec.close()  # twice is harmless
    rec.acs_in(media.encode_audio("CCCC"))  # after close: ignored, no error
    assert len(lines(rec.path)) == 23


async def test_the_recording_is_completed_when_the_call_task_dies(tmp_path: Path) -> None:
    rec = CallRecorder.open(tmp_path, "c4", settings())
    assert rec is not None
    started = asyncio.Event()

    async def call() -> None:
        try:
            for _ in range(5):
                rec.acs_in(media.encode_audio("AAAA"))
            started.set()
            await asyncio.Event().wait()
        finally:
            await rec.close("cancelled")

    task = asyncio.create_task(call())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    recording = load_recording(rec.path)
    assert [r.kind for r in recording.records] == ["AudioData"] * 5 + ["end"]
    assert not recording.truncated


async def test_an_unwritable_directory_logs_one_error_and_the_call_goes_unrecorded(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with caplog.at_level(logging.ERROR, logger="callbot.recording"):
        assert CallRecorder.open(blocker / "recordings", "c5", settings()) is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "c5" in errors[0].getMessage()


async def test_a_full_disk_logs_an_error_and_the_tap_keeps_accepting(caplog: pytest.LogCaptureFixture) -> None:
    header = {"started_at": "2025-01-01T00:00:00.000+00:00", "settings": {}}
    full = await asyncio.to_thread(Path("/dev/full").open, "wb")  # every write fails with ENOSPC
    rec = CallRecorder(FileSink(full, Path("/dev/full")), "c6", header)
    with caplog.at_level(logging.ERROR, logger="callbot.recording"):
        rec.acs_in(media.encode_audio("AAAA"))
        await wait_until(lambda: any(r.levelno == logging.ERROR for r in caplog.records))
        for _ in range(100):
            rec.acs_in(media.encode_audio("AAAA"))  # the call goes on: no exception, nothing buffered
            rec.vl_in({"type": "response.audio.delta", "delta": "AAAA"})
        await rec.close()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "c6" in errors[0].getMessage()


def test_a_line_cut_short_by_a_crash_is_skipped_and_flagged(tmp_path: Path) -> None:
    header = orjson.dumps({"format": "callbot-recording", "version": 1, "call_id": "x", "settings": {}})
    good = orjson.dumps({"t": 1.0, "dir": "vl_in", "kind": "session.created", "event": {"type": "session.created"}})
    path = tmp_path / "cut.jsonl"
    path.write_bytes(header + b"\n" + good + b"\n" + good[:20])
    recording = load_recording(path)
    assert recording.truncated and [r.kind for r in recording.records] == ["session.created"]
    path.write_bytes(header + b"\n" + good[:20] + b"\n" + good + b"\n")
    with pytest.raises(RecordingError, match="cut.jsonl:2"):
        load_recording(path)
    path.write_bytes(good + b"\n")
    with pytest.raises(RecordingError, match="not a callbot recording"):
        load_recording(path)
    path.write_bytes(header.replace(b'"version":1', b'"version":99') + b"\n")
    with pytest.raises(RecordingError, match="version 99"):
        load_recording(path)


async def test_recorded_settings_rebuild_the_core_configuration_that_ran(tmp_path: Path) -> None:
    instructions = tmp_path / "prompt.txt"
    instructions.write_text("You sell bicycles.\n")
    applied = settings(callbot_instructions_file=instructions, callbot_voice="alloy", callbot_vad_silence_ms=700,
                       callbot_playback_lead_ms=80)
    expected = CoreConfig.from_settings("c7", applied)
    rec = CallRecorder.open(tmp_path / "rec", "c7", applied)
    assert rec is not None
    await rec.close()
    instructions.unlink()  # a replay elsewhere does not have the file: the header carries the text
    rebuilt = load_recording(rec.path).settings()
    assert CoreConfig.from_settings("c7", rebuilt) == expected
    assert expected.session["instructions"] == "You sell bicycles."
    assert rebuilt.azure_voicelive_api_key is None


async def test_mcp_server_headers_never_reach_a_recording_under_any_name(tmp_path: Path) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    recorder = CallRecorder.open(tmp_path, "mcp", settings, clock=lambda: 0.0)
    assert recorder is not None
    mcp = {"type": "mcp", "server_label": "kb", "server_url": "https://kb.example.com/mcp",
           "headers": {"X-Api-Key": "kb-secret-value-1", "Authorization": "Bearer kb-secret-value-2"}}
    recorder.agent(False, [mcp])
    recorder.vl_out({"type": "session.update", "session": {"instructions": "hi", "tools": [mcp]}})
    await recorder.close("done")
    text = recorder.path.read_text()
    assert "kb-secret-value" not in text
    assert '"X-Api-Key":"<redacted>"' in text.replace(" ", "")


@pytest.mark.parametrize(("grid", "expected"), [
    ({"ms": 5.0, "phase_ms": 2.5}, (0.005, 0.0025)),
    ({"ms": 5.0, "phase_ms": 7.5}, (0.005, 0.0025)),  # a phase beyond the grid is taken modulo it
    (None, None),  # older recordings: no grid, chunks replay at their deadlines
    ("5", None), ({"ms": 0, "phase_ms": 0}, None), ({"ms": 5.0}, None), ({"ms": 5.0, "phase_ms": "1"}, None),
])
def test_a_recordings_playout_grid_is_read_and_a_malformed_one_is_ignored(grid: Any, expected: Any) -> None:
    from callbot.recording import parse_recording

    header: dict[str, Any] = {"format": "callbot-recording", "version": 1, "call_id": "c1"}
    if grid is not None:
        header["playout_grid"] = grid
    recording = parse_recording([orjson.dumps(header)])
    assert recording.playout_grid == (pytest.approx(expected) if expected else None)
