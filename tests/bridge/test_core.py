"""The pure call state machine: pacing, buffering, barge-in and truncation maths on a virtual clock."""

from __future__ import annotations

import base64
from typing import Any

from callbot.bridge.core import BridgeCore, CoreConfig, HangUp, PlayAudio, StopPlayback, VlSend

RATE = 24000
FRAME = 960  # 20 ms at 24 kHz, 16-bit mono


def make_core(**kw: Any) -> BridgeCore:
    cfg = CoreConfig(call_id="c1", sample_rate=RATE, lead_ms=kw.pop("lead_ms", 100), greeting=kw.pop("greeting", ""),
                     **kw)
    core = BridgeCore(cfg)
    core.start(0.0)
    core.media_started(0.0)
    return core


def ready(core: BridgeCore, now: float = 0.0) -> list[Any]:
    return core.server_event(now, {"type": "session.updated", "session": {}})


def start_response(core: BridgeCore, now: float, rid: str = "resp_1", item: str = "item_1") -> None:
    core.server_event(now, {"type": "response.created", "response": {"id": rid, "status": "in_progress"}})
    core.server_event(now, {"type": "response.output_item.added", "response_id": rid, "item": {"id": item}})


def delta(core: BridgeCore, now: float, ms: int, rid: str = "resp_1", item: str = "item_1", fill: int = 1) -> None:
    pcm = bytes([fill]) * (ms * 48)
    core.server_event(now, {"type": "response.audio.delta", "response_id": rid, "item_id": item,
                            "content_index": 0, "delta": base64.b64encode(pcm).decode()})


def sent_frames(actions: list[Any]) -> list[PlayAudio]:
    return [a for a in actions if isinstance(a, PlayAudio)]


def vl_events(actions: list[Any]) -> list[dict[str, Any]]:
    return [a.event for a in actions if isinstance(a, VlSend)]


def run_clock(core: BridgeCore, start: float, end: float, step: float = 0.001) -> list[tuple[float, Any]]:
    out = []
    t = start
    while t <= end + 1e-9:
        for a in core.tick(t):
            out.append((t, a))
        t = round(t + step, 6)
    return out


def test_caller_audio_before_session_ready_is_buffered_then_flushed_in_order() -> None:
    core = make_core()
    for i in range(5):
        assert core.caller_audio(0.01 * i, f"frame{i}") == []
    actions = ready(core, 0.2)
    appended = [e["audio"] for e in vl_events(actions) if e["type"] == "input_audio_buffer.append"]
    assert appended == [f"frame{i}" for i in range(5)]
    assert vl_events(core.caller_audio(0.3, "live")) == [{"type": "input_audio_buffer.append", "audio": "live"}]


def test_preconnect_buffer_is_bounded_and_drops_oldest() -> None:
    core = make_core(preconnect_buffer_ms=100)  # 5 frames
    for i in range(8):
        core.caller_audio(0.0, f"f{i}")
    appended = [e["audio"] for e in vl_events(ready(core)) if e["type"] == "input_audio_buffer.append"]
    assert appended == ["f3", "f4", "f5", "f6", "f7"]
    assert core.stats.caller_frames_dropped == 3


def test_greeting_is_spoken_once_when_session_becomes_ready() -> None:
    core = make_core(greeting="Hello there")
    events = vl_events(ready(core))
    assert events[0]["type"] == "response.create"
    assert events[0]["response"]["pre_generated_assistant_message"]["content"][0]["text"] == "Hello there"
    assert ready(core) == []


def test_model_audio_is_reframed_into_20ms_frames_and_paced_with_bounded_lead() -> None:
    core = make_core(lead_ms=100)
    ready(core)
    start_response(core, 0.0)
    delta(core, 0.0, 1000)  # one second of audio arrives at once
    timeline = run_clock(core, 0.0, 2.0)
    frames = [(t, a) for t, a in timeline if isinstance(a, PlayAudio)]
    assert len(frames) == 50
    assert all(len(a.pcm) == FRAME for _, a in frames)
    # at most `lead` of audio is ever released ahead of real time
    for i, (t, _) in enumerate(frames):
        released_until = (i + 1) * 0.020
        assert released_until - t <= 0.100 + 1e-6
    # and it keeps up with real time: the last frame leaves no later than 1 s - lead + one frame
    assert frames[-1][0] <= 1.0 - 0.100 + 0.020 + 1e-6


def test_bot_audio_is_released_a_chunk_per_message_within_the_lead_and_wakes_once_per_chunk() -> None:
    core = make_core(lead_ms=120, chunk_ms=40)
    ready(core)
    start_response(core, 0.0)
    delta(core, 0.0, 1000)
    timeline = run_clock(core, 0.0, 2.0)
    chunks = [(t, a) for t, a in timeline if isinstance(a, PlayAudio)]
    assert all(len(a.pcm) == 2 * FRAME for _, a in chunks[:-1]) and len(chunks) == 25
    assert b"".join(a.pcm for _, a in chunks) == bytes([1]) * 48000
    released = 0.0
    for t, a in chunks:
        released += len(a.pcm) / FRAME * 0.020
        assert released - t <= 0.120 + 1e-6  # never more than the lead ahead of real time
    # after the initial 120 ms, a chunk goes out each time 40 ms have played: one wake-up per chunk
    steady = [t for t, _ in chunks[3:]]
    assert all(abs((b - a) - 0.040) < 0.0011 for a, b in zip(steady, steady[1:], strict=False))
    assert core.stats.bot_frames == 50
    assert core.next_deadline() is None or core.next_deadline() > 2.0


def test_barge_in_truncates_to_what_was_heard_whatever_the_chunk_size() -> None:
    heard = {}
    for chunk_ms in (20, 40, 100):
        core = make_core(lead_ms=100, chunk_ms=chunk_ms)
        ready(core)
        start_response(core, 0.0)
        delta(core, 0.0, 2000)
        run_clock(core, 0.0, 0.5)
        actions = core.server_event(0.5, {"type": "input_audio_buffer.speech_started", "audio_start_ms": 500})
        truncate = next(e for e in vl_events(actions) if e["type"] == "conversation.item.truncate")
        heard[chunk_ms] = truncate["audio_end_ms"]
    assert heard == {20: 500, 40: 500, 100: 500}


def test_model_audio_delta_that_is_not_ascii_is_skipped_and_the_call_goes_on() -> None:
    core = make_core()
    ready(core)
    start_response(core, 0.0)
    core.server_event(0.0, {"type": "response.audio.delta", "response_id": "resp_1", "item_id": "item_1",
                            "delta": "AAAA\u00e9"})
    delta(core, 0.0, 40)
    frames = sent_frames([a for _, a in run_clock(core, 0.0, 0.2)])
    assert b"".join(f.pcm for f in frames) == bytes([1]) * 40 * 48


def test_partial_frame_at_end_of_audio_is_padded_not_lost() -> None:
    core = make_core()
    ready(core)
    start_response(core, 0.0)
    core.server_event(0.0, {"type": "response.audio.delta", "response_id": "resp_1", "item_id": "item_1",
                            "delta": base64.b64encode(b"\x01" * 1000).decode()})
    core.server_event(0.0, {"type": "response.audio.done", "response_id": "resp_1", "item_id": "item_1"})
    frames = sent_frames([a for _, a in run_clock(core, 0.0, 0.2)])
    assert len(frames) == 2
    assert frames[1].pcm[:40] == b"\x01" * 40 and frames[1].pcm[40:] == b"\x00" * 920


def test_caller_speech_during_playback_stops_audio_cancels_and_truncates_to_what_was_heard() -> None:
    core = make_core(lead_ms=100)
    ready(core)
    start_response(core, 0.0)
    delta(core, 0.0, 2000)
    run_clock(core, 0.0, 0.5)
    actions = core.server_event(0.5, {"type": "input_audio_buffer.speech_started", "audio_start_ms": 400})
    assert isinstance(actions[0], StopPlayback), "StopAudio goes to ACS first"
    events = vl_events(actions)
    assert [e["type"] for e in events] == ["response.cancel", "conversation.item.truncate"]
    truncate = events[1]
    assert truncate["item_id"] == "item_1" and truncate["content_index"] == 0
    # 0.5 s of wall time has passed since the first frame started playing: the caller heard ~500 ms
    assert abs(truncate["audio_end_ms"] - 500) <= 20
    # nothing more is sent, and late deltas of the interrupted response are discarded
    delta(core, 0.51, 500)
    assert sent_frames([a for _, a in run_clock(core, 0.5, 1.5)]) == []
    assert core.stats.late_deltas_dropped == 1


def test_truncate_never_exceeds_audio_received_for_the_item() -> None:
    core = make_core(lead_ms=100)
    ready(core)
    start_response(core, 0.0)
    delta(core, 0.0, 300)
    run_clock(core, 0.0, 0.25)
    actions = core.server_event(0.25, {"type": "input_audio_buffer.speech_started"})
    trunc = [e for e in vl_events(actions) if e["type"] == "conversation.item.truncate"]
    assert len(trunc) == 1 and trunc[0]["audio_end_ms"] <= 300
    assert abs(trunc[0]["audio_end_ms"] - 250) <= 20


def test_no_stop_audio_storm_when_bot_is_silent() -> None:
    core = make_core()
    ready(core)
    for t in (1.0, 2.0, 3.0):
        assert core.server_event(t, {"type": "input_audio_buffer.speech_started"}) == []
    assert core.stats.stop_audio == 0


def test_barge_in_before_any_audio_played_cancels_without_truncate() -> None:
    core = make_core()
    ready(core)
    start_response(core, 0.0)
    actions = core.server_event(0.1, {"type": "input_audio_buffer.speech_started"})
    assert not any(isinstance(a, StopPlayback) for a in actions)
    assert [e["type"] for e in vl_events(actions)] == ["response.cancel"]


def test_multi_item_response_truncates_only_the_item_being_played() -> None:
    core = make_core(lead_ms=100)
    ready(core)
    start_response(core, 0.0, item="item_a")
    delta(core, 0.0, 200, item="item_a")
    core.server_event(0.0, {"type": "response.audio.done", "response_id": "resp_1", "item_id": "item_a"})
    core.server_event(0.0, {"type": "response.output_item.added", "response_id": "resp_1", "item": {"id": "item_b"}})
    delta(core, 0.0, 500, item="item_b")
    run_clock(core, 0.0, 0.35)
    events = vl_events(core.server_event(0.35, {"type": "input_audio_buffer.speech_started"}))
    truncs = [e for e in events if e["type"] == "conversation.item.truncate"]
    assert [t["item_id"] for t in truncs] == ["item_b"]
    assert abs(truncs[0]["audio_end_ms"] - 150) <= 20


def test_audio_after_completed_response_still_plays_and_barge_in_sends_no_cancel() -> None:
    core = make_core(lead_ms=100)
    ready(core)
    start_response(core, 0.0)
    delta(core, 0.0, 1000)
    core.server_event(0.0, {"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    run_clock(core, 0.0, 0.4)
    actions = core.server_event(0.4, {"type": "input_audio_buffer.speech_started"})
    assert isinstance(actions[0], StopPlayback)
    assert [e["type"] for e in vl_events(actions)] == ["conversation.item.truncate"]


def test_stale_epoch_marks_frames_released_before_a_barge_in() -> None:
    core = make_core()
    ready(core)
    start_response(core, 0.0)
    delta(core, 0.0, 200)
    frames = sent_frames(core.tick(0.0))
    core.server_event(0.05, {"type": "input_audio_buffer.speech_started"})
    assert frames and all(f.epoch != core.epoch for f in frames)


def test_max_call_duration_says_goodbye_then_hangs_up_after_it_played() -> None:
    core = make_core(max_call_seconds=10.0)
    ready(core)
    actions = core.tick(10.0)
    assert vl_events(actions)[0]["type"] == "response.create"
    assert not any(isinstance(a, HangUp) for a in actions)
    start_response(core, 10.1, rid="resp_bye", item="item_bye")
    delta(core, 10.1, 400, rid="resp_bye", item="item_bye")
    core.server_event(10.2, {"type": "response.done", "response": {"id": "resp_bye", "status": "completed"}})
    timeline = run_clock(core, 10.2, 11.0)
    hangups = [t for t, a in timeline if isinstance(a, HangUp)]
    assert hangups and hangups[0] >= 10.1 + 0.4 - 0.1
    assert core.tick(12.0) == []


def test_max_call_duration_hangs_up_even_if_goodbye_never_comes() -> None:
    core = make_core(max_call_seconds=5.0)
    ready(core)
    core.tick(5.0)
    assert not any(isinstance(a, HangUp) for a in core.tick(10.0))
    assert any(isinstance(a, HangUp) for a in core.tick(20.1))


def test_voicelive_error_is_counted_and_benign_cancel_race_is_not() -> None:
    core = make_core()
    core.server_event(0, {"type": "error", "error": {"code": "response_cancel_not_active", "message": "x"}})
    core.server_event(0, {"type": "error", "error": {"code": "invalid_value", "message": "bad"}})
    assert core.stats.voicelive_errors == 1


def test_transcripts_are_kept_and_interrupted_bot_turns_marked() -> None:
    core = make_core()
    ready(core)
    core.server_event(0, {"type": "conversation.item.input_audio_transcription.completed", "transcript": "hi"})
    start_response(core, 0.0)
    delta(core, 0.0, 500)
    run_clock(core, 0.0, 0.2)
    core.server_event(0.2, {"type": "input_audio_buffer.speech_started"})
    core.server_event(0.3, {"type": "response.audio_transcript.done", "response_id": "resp_1", "transcript": "Hey"})
    assert [(t.role, t.text, t.interrupted) for t in core.turns] == [("caller", "hi", False), ("bot", "Hey", True)]


def test_bot_audio_waits_for_the_media_socket_then_plays_from_its_start() -> None:
    core = BridgeCore(CoreConfig(call_id="c2", sample_rate=RATE, lead_ms=100, greeting="Hi"))
    core.start(0.0)
    ready(core, 0.1)  # the session opened while ACS was still connecting the media socket
    start_response(core, 0.2)
    delta(core, 0.2, 400)
    assert core.tick(0.5) == [] and core.next_deadline() is not None  # only the max-duration deadline
    assert not core.playing(0.5)
    core.media_started(1.0)
    frames = sent_frames([a for _, a in run_clock(core, 1.0, 2.0)])
    assert len(frames) == 20, "nothing of the greeting was lost while waiting"


def test_a_refused_pre_generated_greeting_is_asked_of_the_model_instead() -> None:
    core = make_core(greeting="Welcome to Contoso")
    ready(core)
    actions = core.server_event(0.1, {"type": "error", "error": {
        "type": "invalid_request_error", "code": "unknown_parameter",
        "message": "Unknown parameter: 'response.pre_generated_assistant_message'.",
        "param": "response.pre_generated_assistant_message"}})
    [retry] = vl_events(actions)
    assert retry["type"] == "response.create" and "pre_generated_assistant_message" not in retry["response"]
    assert retry["response"]["instructions"].endswith("Welcome to Contoso")
    assert vl_events(core.tick(3600.0))[0]["response"]["instructions"].endswith("goodbye."), "the goodbye too"
