"""The call core's session lifecycle (open, ready, lost, reopened), the goodbye, and truncation against a model of
ACS's player, on a virtual clock."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from callbot.bridge.core import MAX_RESTORED_CHARS, MAX_RESTORED_TURNS, BridgeCore, CoreConfig, HangUp, PlayAudio, Turn
from tests.bridge.test_core import delta, make_core, ready, run_clock, start_response, vl_events

BYTES_PER_MS = 48


def speech_started(core: BridgeCore, now: float) -> list[Any]:
    return core.server_event(now, {"type": "input_audio_buffer.speech_started"})


def truncates(actions: list[Any]) -> list[dict[str, Any]]:
    return [e for e in vl_events(actions) if e["type"] == "conversation.item.truncate"]


# -- caller audio and the session ---------------------------------------------------------------------------------

def test_live_caller_audio_is_forwarded_at_once_as_appends_in_order() -> None:
    core = make_core()
    ready(core)
    sent = [vl_events(core.caller_audio(0.02 * i, f"f{i}")) for i in range(3)]
    assert sent == [[{"type": "input_audio_buffer.append", "audio": f"f{i}"}] for i in range(3)]
    assert core.stats.caller_frames == 3 and core.stats.caller_frames_buffered == 0


def test_session_opened_configures_the_session_and_holds_caller_audio_until_it_is_updated() -> None:
    core = make_core()
    events = vl_events(core.session_opened(0.0))
    assert [e["type"] for e in events] == ["session.update"]
    assert events[0]["session"] == core.cfg.session
    assert core.caller_audio(0.1, "early") == [], "no audio before session.updated"
    assert [e.get("audio") for e in vl_events(ready(core, 0.2))] == ["early"]


def appends(actions: list[Any]) -> list[str]:
    return [e["audio"] for e in vl_events(actions) if e["type"] == "input_audio_buffer.append"]


def test_after_a_drop_uncommitted_audio_is_resent_first_then_what_the_caller_said_meanwhile() -> None:
    core = make_core()
    ready(core)
    core.caller_audio(0.0, "said1")
    core.server_event(0.1, {"type": "input_audio_buffer.committed", "item_id": "u1"})  # the model has it
    core.caller_audio(0.2, "sent2")
    core.caller_audio(0.3, "sent3")  # handed to a socket that (silently) died: nobody heard these
    core.session_lost(1.0)
    assert core.caller_audio(1.1, "during") == [], "buffered while no session is ready"
    core.session_opened(1.2)
    assert appends(ready(core, 1.3)) == ["sent2", "sent3", "during"]
    assert core.stats.caller_frames_resent == 2
    assert vl_events(core.caller_audio(1.4, "live")) == [{"type": "input_audio_buffer.append", "audio": "live"}]


def b64(fill: int, size: int) -> str:
    return base64.b64encode(bytes([fill]) * size).decode()


@pytest.mark.parametrize("frame_bytes", [960, 640, 160], ids=["pcm24k", "pcm16k-padded", "ulaw-padded"])
def test_with_40_ms_appends_two_frames_go_to_the_model_as_one_append_of_both(frame_bytes: int) -> None:
    core = make_core(append_ms=40)
    ready(core)
    frames = [b64(i, frame_bytes) for i in range(1, 5)]
    sent = [appends(core.caller_audio(0.02 * i, f)) for i, f in enumerate(frames)]
    assert [len(a) for a in sent] == [0, 1, 0, 1], "one append every second frame"
    audio = [base64.b64decode(a) for a in sent[1] + sent[3]]
    assert audio == [bytes([1]) * frame_bytes + bytes([2]) * frame_bytes,
                     bytes([3]) * frame_bytes + bytes([4]) * frame_bytes]
    if frame_bytes % 3 == 0:
        assert sent[1] == [frames[0] + frames[1]], "unpadded base64 is joined as it is, never re-encoded"
    assert core.stats.caller_frames == 4


def test_with_40_ms_appends_a_half_grouped_append_follows_the_ring_to_the_next_session() -> None:
    core = make_core(append_ms=40)
    ready(core)
    for i in range(3):  # frames 0+1 sent (in the ring), 2 waits for its pair
        core.caller_audio(0.02 * i, b64(i, 960))
    core.session_lost(1.0)
    core.caller_audio(1.1, b64(9, 960))
    core.session_opened(1.2)
    resent = b"".join(base64.b64decode(a) for a in appends(ready(core, 1.3)))
    assert resent == b"".join(bytes([i]) * 960 for i in (0, 1, 2, 9)), "ring, half group, what waited: in order"


def test_a_second_loss_before_a_session_was_ready_keeps_the_first_losses_audio_in_front() -> None:
    core = make_core()
    ready(core)
    core.caller_audio(0.0, "a")
    core.session_lost(1.0)
    core.caller_audio(1.1, "b")
    core.session_opened(1.2)
    core.session_lost(1.3)  # failed before session.updated: nothing was sent to it
    core.caller_audio(1.4, "c")
    core.session_opened(1.5)
    assert appends(ready(core, 1.6)) == ["a", "b", "c"]


def test_a_cleared_input_buffer_or_a_commit_empties_the_resend_ring() -> None:
    for event in ("input_audio_buffer.cleared", "input_audio_buffer.committed"):
        core = make_core()
        ready(core)
        core.caller_audio(0.0, "old")
        core.server_event(0.1, {"type": event})
        core.session_lost(1.0)
        assert appends(ready(core, 1.3)) == [], event


def test_the_resend_ring_keeps_the_newest_ten_seconds_by_bytes_of_the_sessions_input_format() -> None:
    frame = base64.b64encode(bytes(960)).decode()  # 20 ms of 24 kHz pcm16
    core = make_core()
    ready(core)
    for i in range(600):  # 12 s
        core.caller_audio(0.02 * i, frame)
    core.session_lost(20.0)
    resent = appends(ready(core, 20.1))
    assert len(resent) == 500, "10 s of 20 ms frames"
    mulaw = base64.b64encode(bytes(160)).decode()  # 20 ms of G.711
    core = make_core(session={"input_audio_format": "g711_ulaw"})
    ready(core)
    for i in range(600):
        core.caller_audio(0.02 * i, mulaw)
    core.session_lost(20.0)
    assert len(appends(ready(core, 20.1))) == 500, "the bound follows the format: 10 s of 8 kHz mu-law too"


def test_audio_waiting_beyond_the_buffer_is_counted_as_dropped_keeping_the_newest() -> None:
    core = make_core(preconnect_buffer_ms=60)  # 3 frames
    for name in ("w1", "w2", "w3", "w4"):
        core.caller_audio(0.0, name)
    assert core.stats.caller_frames_dropped == 1
    core.session_opened(0.1)
    assert appends(ready(core, 0.2)) == ["w2", "w3", "w4"]


def test_a_lost_session_settles_its_items_so_nothing_of_it_is_truncated_later() -> None:
    core = make_core(lead_ms=100)
    ready(core)
    start_response(core, 0.0)
    delta(core, 0.0, 1000)
    run_clock(core, 0.0, 0.3)
    core.session_lost(0.3)
    actions = speech_started(core, 0.4)
    assert truncates(actions) == [], "the old session's item ids mean nothing to the new session"
    assert "response.cancel" not in [e["type"] for e in vl_events(actions)]


def test_the_greeting_is_spoken_once_not_again_after_a_reconnect() -> None:
    core = make_core(greeting="Hello there")
    core.session_opened(0.0)
    assert [e["type"] for e in vl_events(ready(core, 0.1))] == ["response.create"]
    core.session_lost(5.0)
    core.session_opened(5.5)
    assert vl_events(ready(core, 5.6)) == [], "ready -> lost -> opened -> ready: no second greeting"


def test_a_reconnect_restores_the_newest_turns_each_capped_in_length() -> None:
    core = make_core()
    core.turns.extend(Turn("caller" if i % 2 == 0 else "bot", f"turn {i}") for i in range(MAX_RESTORED_TURNS + 5))
    core.turns.append(Turn("caller", "x" * (MAX_RESTORED_CHARS + 500)))
    events = vl_events(core.session_opened(0.0))
    items = [e["item"] for e in events if e["type"] == "conversation.item.create"]
    assert len(items) == MAX_RESTORED_TURNS
    texts = [item["content"][0]["text"] for item in items]
    assert texts[0] == f"turn {6}", "the oldest turns are the ones left out"
    assert texts[-1] == "x" * MAX_RESTORED_CHARS
    assert [item["role"] for item in items[:2]] == ["user", "assistant"]
    assert [item["content"][0]["type"] for item in items[:2]] == ["input_text", "text"]


# -- the goodbye ---------------------------------------------------------------------------------------------------

def test_a_barge_in_during_the_goodbye_does_not_stop_it_and_the_call_hangs_up_after_it_played() -> None:
    core = make_core(max_call_seconds=10.0, lead_ms=100)
    ready(core)
    core.tick(10.0)  # time is up: the goodbye is asked for
    start_response(core, 10.1, rid="resp_bye", item="item_bye")
    delta(core, 10.1, 1000, rid="resp_bye", item="item_bye")
    core.server_event(10.2, {"type": "response.done", "response": {"id": "resp_bye", "status": "completed"}})
    before = run_clock(core, 10.1, 10.5)
    assert speech_started(core, 10.5) == [], "no StopAudio, cancel or truncate while saying goodbye"
    timeline = run_clock(core, 10.5, 12.0)
    frames = sum(len(a.pcm) // 960 for _, a in before + timeline if isinstance(a, PlayAudio))
    hangups = [t for t, a in timeline if isinstance(a, HangUp)]
    assert frames == 50, "all of the goodbye played"
    assert hangups and hangups[0] >= 11.1 - 0.01


# -- truncation against a model of ACS's player -------------------------------------------------------------------

class AcsPlayer:
    """ACS as the caller hears it: each message plays from when it arrives or when the previous one ends, whichever
    is later (a gap in what callbot sends is silence for the caller)."""

    def __init__(self) -> None:
        self.busy_until = 0.0
        self.spans: list[tuple[float, float]] = []

    def receive(self, now: float, pcm: bytes) -> None:
        start = max(self.busy_until, now)
        self.busy_until = start + len(pcm) / BYTES_PER_MS / 1000
        self.spans.append((start, self.busy_until))

    def heard_ms(self, now: float) -> float:
        return sum(max(0.0, min(end, now) - start) for start, end in self.spans) * 1000


DELIVERIES = {
    "all-at-once": [(0.0, 4000)],
    "faster-than-real-time": [(i * 0.05, 100) for i in range(40)],
    "real-time": [(i * 0.1, 100) for i in range(40)],
    "slower-than-real-time": [(i * 0.13, 100) for i in range(40)],
    "a-stall-then-a-burst": [(0.0, 300), (0.7, 2500), (0.75, 1200)],
}


@pytest.mark.parametrize("lead_ms", [20, 120, 500, 1000])
@pytest.mark.parametrize("delivery", list(DELIVERIES))
@pytest.mark.parametrize("barge_at", [0.35, 1.5, 2.6])
def test_truncation_is_what_the_caller_heard_at_every_lead_and_delivery(lead_ms: int, delivery: str,
                                                                         barge_at: float) -> None:
    core = make_core(lead_ms=lead_ms)
    ready(core)
    start_response(core, 0.0)
    player = AcsPlayer()
    pending = list(DELIVERIES[delivery])
    t = 0.0
    while t < barge_at:
        while pending and pending[0][0] <= t + 1e-9:
            delta(core, t, pending.pop(0)[1])
        for action in core.tick(t):
            if isinstance(action, PlayAudio):
                player.receive(t, action.pcm)
        t = round(t + 0.001, 6)
    [truncate] = truncates(speech_started(core, t))
    assert abs(truncate["audio_end_ms"] - player.heard_ms(t)) <= 20


def test_an_item_still_being_generated_is_truncated_even_when_all_it_delivered_was_heard() -> None:
    core = make_core(lead_ms=100)
    ready(core)
    start_response(core, 0.0)
    delta(core, 0.0, 200)
    run_clock(core, 0.0, 0.5)  # all 200 ms played; the model has more that has not arrived yet
    [truncate] = truncates(speech_started(core, 0.5))
    assert truncate["audio_end_ms"] == 200


def test_a_complete_item_heard_to_its_end_is_not_truncated() -> None:
    core = make_core(lead_ms=100)
    ready(core)
    start_response(core, 0.0)
    delta(core, 0.0, 200)
    core.server_event(0.0, {"type": "response.audio.done", "response_id": "resp_1", "item_id": "item_1"})
    run_clock(core, 0.0, 0.5)
    assert truncates(speech_started(core, 0.5)) == []


def test_an_item_released_in_full_but_still_playing_survives_a_new_response_and_is_truncated() -> None:
    core = make_core(lead_ms=500)
    ready(core)
    start_response(core, 0.0)
    delta(core, 0.0, 400)
    core.server_event(0.0, {"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    run_clock(core, 0.0, 0.1)  # all 400 ms released at once (the lead is 500 ms); 100 ms of it heard
    core.server_event(0.1, {"type": "response.created", "response": {"id": "resp_2"}})  # prunes finished items
    [truncate] = truncates(speech_started(core, 0.2))
    assert truncate["item_id"] == "item_1" and abs(truncate["audio_end_ms"] - 200) <= 20


def test_model_audio_is_decoded_from_base64_into_the_play_queue() -> None:
    core = make_core()
    ready(core)
    start_response(core, 0.0)
    pcm = bytes(range(256)) * 15  # 3840 bytes: four 20 ms frames
    core.server_event(0.0, {"type": "response.audio.delta", "response_id": "resp_1", "item_id": "item_1",
                            "delta": base64.b64encode(pcm).decode()})
    out = b"".join(a.pcm for _, a in run_clock(core, 0.0, 0.2) if isinstance(a, PlayAudio))
    assert out == pcm


@pytest.mark.parametrize("log_transcripts", [False, True])
def test_transcripts_and_key_presses_reach_info_logs_only_when_asked_for(caplog: pytest.LogCaptureFixture,
                                                                         log_transcripts: bool) -> None:
    core = make_core(log_transcripts=log_transcripts)
    ready(core)
    with caplog.at_level("INFO", logger="callbot.bridge"):
        core.server_event(0, {"type": "conversation.item.input_audio_transcription.completed",
                              "transcript": "my card number is 4111"})
        core.server_event(0, {"type": "response.audio_transcript.done", "response_id": "r", "transcript": "Thanks"})
        core.dtmf(0.1, "1234")
    text = caplog.text
    for secret in ("4111", "Thanks", "1234"):
        assert (secret in text) is log_transcripts
    assert [t.text for t in core.turns] == ["my card number is 4111", "Thanks"], "kept for reconnects either way"


def test_an_apology_before_the_media_socket_is_attached_waits_for_it_then_plays_before_the_hang_up() -> None:
    core = BridgeCore(CoreConfig(call_id="c3", sample_rate=24000, lead_ms=100))
    core.start(0.0)
    assert core.end_call(0.1, "voicelive_unavailable", local_audio=bytes(960 * 10)) == []
    assert core.tick(0.5) == [], "no hang-up while the apology waits for the caller's line"
    core.media_started(1.0)
    timeline = run_clock(core, 1.0, 1.5)
    frames = sum(len(a.pcm) // 960 for _, a in timeline if isinstance(a, PlayAudio))
    hangups = [t for t, a in timeline if isinstance(a, HangUp)]
    assert frames == 10 and hangups and hangups[0] >= 1.2 - 0.01
