"""Replaying recorded calls against the current bridge core, proving a replay can fail, and the WAV export."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from callbot.bridge.core import Action, BridgeCore, VlSend
from callbot.cli import main
from callbot.local.acs.network import PhoneCall, PhoneNetwork
from callbot.local.voicelive.protocol import tone
from callbot.local.voicelive.server import VoiceLiveServer
from callbot.recording import load_recording
from callbot.replay import check_recording, recorded_messages, replay
from tests.harness import SIGNING_KEY, VOICELIVE_KEY, WEBHOOK_SECRET, Running, run_callbot
from tests.recordings import make_recordings
from tests.test_app_calls import eventually

RECORDINGS = Path(__file__).parent / "recordings"
NAMES = ["qa", "barge_in", "hangup_mid_answer", "voicelive_error", "tool_call", "transfer"]


def kinds(path: Path, channel: str) -> list[str]:
    return [m.kind for m in recorded_messages(load_recording(path)) if m.channel == channel]


@pytest.mark.parametrize("name", NAMES)
def test_each_recorded_call_replays_without_differences(name: str) -> None:
    report = check_recording(load_recording(RECORDINGS / f"{name}.jsonl"))
    assert report.ok, report.text()
    assert report.result.inputs > 50


@pytest.mark.parametrize("name", NAMES)
def test_recording_files_stay_small(name: str) -> None:
    assert (RECORDINGS / f"{name}.jsonl").stat().st_size < 300 * 1024


def test_the_recordings_contain_what_they_are_named_after() -> None:
    qa, barge = RECORDINGS / "qa.jsonl", RECORDINGS / "barge_in.jsonl"
    assert kinds(qa, "acs_out") == ["AudioData"] * 50  # a 1 s answer played to its end
    assert "StopAudio" in kinds(barge, "acs_out")
    assert {"response.cancel", "conversation.item.truncate"} <= set(kinds(barge, "vl_out"))
    hang_up = load_recording(RECORDINGS / "hangup_mid_answer.jsonl")
    assert hang_up.records[-1].data["reason"] == "caller_hung_up"
    assert 10 < kinds(RECORDINGS / "hangup_mid_answer.jsonl", "acs_out").count("AudioData") < 75 * 0.8
    error = load_recording(RECORDINGS / "voicelive_error.jsonl")
    seen = [(r.dir, r.kind) for r in error.records]
    assert ("vl_in", "error") in seen
    assert seen.count(("meta", "voicelive_open")) == 2 and ("meta", "voicelive_closed") in seen
    assert kinds(RECORDINGS / "voicelive_error.jsonl", "vl_out").count("conversation.item.create") == 2


def test_the_tool_and_transfer_recordings_replay_the_agents_actions_without_calling_anything() -> None:
    tool = load_recording(RECORDINGS / "tool_call.jsonl")
    result = replay(tool)
    assert [name for _, name, _ in result.tools] == ["order_status"], "the call is made, its output fed back"
    outputs = [m.body["item"] for m in result.messages
               if m.kind == "conversation.item.create" and m.body["item"]["type"] == "function_call_output"]
    assert len(outputs) == 1 and "shipped" in outputs[0]["output"]
    transfer = load_recording(RECORDINGS / "transfer.jsonl")
    result = replay(transfer)
    assert [reason for _, reason in result.transfers] == ["the caller asked for a person"]
    assert result.hang_up is not None and result.hang_up[1] == "transferred"
    assert transfer.records[-1].data["reason"] == "transferred"


class LostToolOutputCore(BridgeCore):
    """A deliberately broken agent: a tool's output never reaches the model."""

    def tool_result(self, now: float, call_id: str, output: str) -> list[Action]:
        return []


def test_a_lost_tool_output_fails_the_replay() -> None:
    report = check_recording(load_recording(RECORDINGS / "tool_call.jsonl"), core_factory=LostToolOutputCore)
    assert not report.ok and "function_call_output" in report.text()


class NoTruncateCore(BridgeCore):
    """A deliberately broken barge-in: StopAudio and cancel, but the model is never told what was heard."""

    def server_event(self, now: float, ev: dict[str, Any]) -> list[Action]:
        actions = super().server_event(now, ev)
        return [a for a in actions if not (isinstance(a, VlSend) and a.event["type"] == "conversation.item.truncate")]


class NoBargeInCore(BridgeCore):
    """A deliberately broken barge-in: the bot keeps talking over the caller."""

    def server_event(self, now: float, ev: dict[str, Any]) -> list[Action]:
        if ev.get("type") == "input_audio_buffer.speech_started":
            return []
        return super().server_event(now, ev)


def test_a_barge_in_without_truncate_fails_the_replay() -> None:
    report = check_recording(load_recording(RECORDINGS / "barge_in.jsonl"), core_factory=NoTruncateCore)
    assert not report.ok
    text = "\n".join(report.differences)
    assert "callbot -> Voice Live" in text and "conversation.item.truncate" in text
    assert "callbot -> ACS" not in text  # the ACS side of the barge-in is unchanged


def test_a_bot_that_talks_over_the_caller_fails_the_replay() -> None:
    report = check_recording(load_recording(RECORDINGS / "barge_in.jsonl"), core_factory=NoBargeInCore)
    text = "\n".join(report.differences)
    assert "callbot -> ACS" in text and "StopAudio" in text
    assert "response.cancel" in text



def test_a_frame_the_live_pass_did_not_send_before_a_barge_in_is_not_replayed_before_it() -> None:
    """A live playout timer that fired late, after the caller's speech was reported, found the answer stopped: the
    recording shows no frame between that release's deadline and StopAudio, and the replay keeps that order, to the
    frame. A frame the recording shows going out before the barge-in is still replayed before it."""
    on_time = check_recording(load_recording(RECORDINGS / "barge_in.jsonl"), frame_tolerance=0)
    assert on_time.ok, on_time.text()
    recording = load_recording(RECORDINGS / "barge_in.jsonl")
    records = recording.records
    stop = next(i for i, r in enumerate(records) if r.kind == "StopAudio")
    last = max(i for i in range(stop) if records[i].dir == "acs_out" and records[i].kind == "AudioData")
    assert records[stop].t - records[last].t < 20  # that frame's next one would have been due before StopAudio
    del records[last]  # as if its pass had run only after the barge-in: the answer was already stopped
    late = check_recording(recording, frame_tolerance=0)
    assert late.ok, late.text()
    frames = [m for m in late.result.messages if m.kind == "AudioData"]
    assert len(frames) == len([m for m in on_time.result.messages if m.kind == "AudioData"]) - 1

def test_call_control_after_the_media_ended_does_not_extend_the_replay(tmp_path: Path) -> None:
    """ACS posts CallDisconnected after the caller's media socket closed; callbot then hangs up over REST."""
    source = (RECORDINGS / "hangup_mid_answer.jsonl").read_bytes().rstrip(b"\n").split(b"\n")
    end = orjson.loads(source[-1])["t"]
    late = [{"t": end + 400, "dir": "acs_in", "kind": "callback",
             "events": [{"type": "Microsoft.Communication.CallDisconnected", "data": {}}]},
            {"t": end + 450, "dir": "acs_out", "kind": "rest", "op": "hang_up", "detail": {"reason": "x"}}]
    path = tmp_path / "with_call_control.jsonl"
    path.write_bytes(b"\n".join([*source, *map(orjson.dumps, late)]) + b"\n")
    report = check_recording(load_recording(path), frame_tolerance=0)
    assert report.ok, report.text()  # the unplayed rest of the answer stays unplayed


def test_replay_emits_the_wire_messages_the_runner_sends() -> None:
    result = replay(load_recording(RECORDINGS / "barge_in.jsonl"))
    first = result.messages[0]
    assert (first.channel, first.kind) == ("vl_out", "session.update")
    assert first.body["session"]["input_audio_sampling_rate"] == 16000
    audio = [m for m in result.messages if m.kind == "AudioData"]
    assert all(set(m.body) == {"kind", "audioData"} and len(m.body["audioData"]["data"]) == 856 for m in audio)
    truncate = next(m for m in result.messages if m.kind == "conversation.item.truncate")
    stop = next(m for m in result.messages if m.kind == "StopAudio")
    assert stop.t == truncate.t  # the same barge-in, on the virtual clock
    assert 400 <= truncate.body["audio_end_ms"] <= 700
    assert result.hang_up is None  # the caller hung up, not the bot


def test_the_cli_exits_non_zero_and_prints_a_readable_diff_on_a_difference(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(RECORDINGS / "barge_in.jsonl")]) == 0
    assert "no differences" in capsys.readouterr().out
    changed = []
    for line in (RECORDINGS / "barge_in.jsonl").read_bytes().splitlines():
        record = orjson.loads(line)
        if record.get("kind") == "conversation.item.truncate":  # as if callbot had once truncated elsewhere
            record["event"]["audio_end_ms"] += 200
        changed.append(orjson.dumps(record))
    edited = tmp_path / "edited.jsonl"
    edited.write_bytes(b"\n".join(changed) + b"\n")
    assert main(["replay", str(edited)]) == 1
    out = capsys.readouterr().out
    assert "callbot -> Voice Live:" in out and "audio_end_ms" in out and "<nothing>" not in out
    assert max(len(line) for line in out.splitlines()) < 400, "audio is shown as <N bytes>, not base64"
    (tmp_path / "junk.jsonl").write_text("hello\n")
    assert main(["replay", str(tmp_path / "junk.jsonl")]) == 2
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 2


def read_wav(path: Path) -> tuple[int, np.ndarray[Any, Any]]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (2, 2)
        return wav.getframerate(), np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)


def test_export_wav_puts_the_caller_left_and_the_bot_right_cut_at_stop_audio(tmp_path: Path) -> None:
    path = RECORDINGS / "barge_in.jsonl"
    assert main(["export-wav", str(path), str(tmp_path / "call.wav")]) == 0
    rate, samples = read_wav(tmp_path / "call.wav")
    assert rate == 16000
    recording = load_recording(path)
    assert abs(len(samples) / rate - recording.duration_ms / 1000) < 0.3
    caller, bot = samples[:, 0], samples[:, 1]
    assert bot.any() and caller.any()
    stop_ms = next(m.t for m in recorded_messages(recording) if m.kind == "StopAudio")
    at = round(stop_ms * rate / 1000)
    assert np.abs(bot[at - rate // 10:at]).max() > 1000, "the answer was playing until StopAudio"
    assert not bot[at:at + rate // 4].any(), "nothing of the interrupted answer after StopAudio"
    first_caller = next(r.t for r in recording.records if r.dir == "acs_in" and r.kind == "AudioData")
    start = int(first_caller * rate / 1000)
    assert np.array_equal(caller[start:start + 320].tobytes(), tone(20, "pcm16_16000hz", frequency=220.0))
    assert not bot[start:start + 320].any(), "the bot is silent while the caller asks"


def test_replay_wav_writes_what_the_current_code_would_play(tmp_path: Path) -> None:
    assert main(["replay", str(RECORDINGS / "qa.jsonl"), "--wav", str(tmp_path / "qa.wav")]) == 0
    rate, samples = read_wav(tmp_path / "qa.wav")
    played = np.flatnonzero(samples[:, 1])
    assert 0.95 < (played[-1] - played[0]) / rate < 1.05  # the whole 1 s answer, back to back


async def test_a_call_recorded_through_the_bridge_runner_replays_without_differences(tmp_path: Path) -> None:
    path = await make_recordings.record("barge_in", tmp_path)
    report = check_recording(await asyncio.to_thread(load_recording, path))
    assert report.ok, report.text()
    assert "StopAudio" in [m.kind for m in report.recorded]


async def hang_up_and_find_the_recording(call: PhoneCall, cb: Running, directory: Path) -> Path:
    """The caller hangs up; once the service has ended the call, its one recording in `directory`."""
    await call.hang_up()
    await eventually(lambda: not cb.services.registry.calls, what="the call ended")
    (path,) = await asyncio.to_thread(lambda: list(directory.glob("*.jsonl")))
    return path


async def test_a_live_call_recorded_by_the_service_replays_without_differences(
        tmp_path: Path, phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    env = {k.lower(): v for k, v in phone.env().items()}
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_recordings_dir=str(tmp_path),
                           callbot_media_format="pcm16k", **env) as cb:
        call = await phone.place_call(cb.url, WEBHOOK_SECRET)
        session = await voicelive.wait_for_session()
        await session.wait_for("session.update")
        await call.stream(tone(300, "pcm16_16000hz", frequency=220.0))
        await session.start_response(text="A long answer", audio=tone(2000, "pcm16_16000hz"), realtime_factor=0.5)
        await call.wait_for_audio(frames=1)
        await asyncio.sleep(0.5)
        await session.speech_started()
        await call.wait_for_stop()
        await session.wait_for("conversation.item.truncate")
        await call.stream(tone(200, "pcm16_16000hz", frequency=220.0))
        path = await hang_up_and_find_the_recording(call, cb, tmp_path)
    text = await asyncio.to_thread(path.read_text)
    assert VOICELIVE_KEY not in text and SIGNING_KEY not in text and WEBHOOK_SECRET not in text
    recording = await asyncio.to_thread(load_recording, path)
    seen = {(r.dir, r.kind) for r in recording.records}
    assert {("acs_in", "AudioData"), ("acs_out", "AudioData"), ("acs_out", "StopAudio"), ("vl_in", "session.updated"),
            ("vl_out", "conversation.item.truncate")} <= seen
    report = check_recording(recording)
    assert report.ok, report.text()


async def test_a_live_call_on_a_coarse_playout_grid_replays_with_its_chunks_released_on_that_grid(
        tmp_path: Path, phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    # The process's playout clock releases bot audio on a grid (5 ms; 80 ms here), and three barge-ins come 60 ms
    # after a grid point: live, the two or three 20 ms chunks that fell due since are still queued when it drops them.
    # The recording names the grid; a replay that ignored it would release them first. The fourth answer is cut
    # 30 ms in, before any grid point: live, its arrival kicked the send pass, which released its first chunks at
    # once; a replay has to do the same.
    env = {k.lower(): v for k, v in phone.env().items()}
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_recordings_dir=str(tmp_path),
                           callbot_media_format="pcm16k", **env) as cb:
        cb.services.registry.pacer.grid_s = 0.08
        call = await phone.place_call(cb.url, WEBHOOK_SECRET)
        session = await voicelive.wait_for_session()
        await session.wait_for("session.update")
        loop = asyncio.get_running_loop()
        for n in range(4):
            if n == 3:  # an answer that begins just after a grid point, cut 30 ms in: its first chunks went at once
                await asyncio.sleep((0.005 - loop.time()) % 0.08)
            await session.start_response(text=f"Answer {n}", audio=tone(3000, "pcm16_16000hz"), realtime_factor=0.5)
            await asyncio.sleep(0.03 if n == 3 else 0.3)
            if n < 3:
                await asyncio.sleep((0.06 - loop.time()) % 0.08)  # 60 ms after a grid point (the grid: loop time)
            asked = time.monotonic()
            await session.speech_started()
            await call.wait_for_stop(after=asked)
            await session.wait_for("conversation.item.truncate", count=n + 1)
            await session.speech_stopped()
        path = await hang_up_and_find_the_recording(call, cb, tmp_path)
    recording = await asyncio.to_thread(load_recording, path)
    assert recording.playout_grid is not None
    grid, phase = recording.playout_grid
    assert grid == pytest.approx(0.08) and 0 <= phase < grid
    report = check_recording(recording)
    assert report.ok, report.text()
    assert [m.kind for m in report.recorded].count("StopAudio") == 4
    del recording.header["playout_grid"]  # replayed as if chunks went out at their deadlines: not what was sent
    assert not check_recording(recording).ok
