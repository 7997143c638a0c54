"""The transport adapters against the neutral core: what each wire message becomes, and what each action sends."""

from __future__ import annotations

import base64

import orjson
import pytest

from callbot.acs.adapter import AcsTransport
from callbot.audio.formats import MEDIA_FORMATS
from callbot.bridge.core import Notify, PlayAudio, StopPlayback
from callbot.bridge.transport import CallerAudio, CallerLeft, KeyPress, Malformed, Played, dispatch, transport_for
from callbot.web.adapter import WebTransport
from tests.bridge.test_core import delta, make_core, ready, run_clock, start_response, vl_events

FRAME = bytes(range(240)) * 4  # 960 bytes: 20 ms at 24 kHz
B64 = base64.b64encode(FRAME).decode()


def test_acs_messages_become_neutral_inputs_and_reach_the_model_untouched() -> None:
    acs = AcsTransport("c1", MEDIA_FORMATS["pcm24k"])
    core = make_core()
    ready(core)
    msg = acs.parse('{"kind":"AudioData","audioData":{"data":"' + B64 + '"}}')
    assert msg == CallerAudio(B64)
    assert vl_events(dispatch(core, 0.0, msg)) == [{"type": "input_audio_buffer.append", "audio": B64}]
    assert acs.parse('{"kind":"DtmfData","dtmfData":{"data":"7"}}') == KeyPress("7")
    assert acs.parse('{"kind":"AudioMetadata","audioMetadata":{"sampleRate":24000,"channels":1,"length":960}}') is None
    assert acs.parse('{"kind":"SomethingNew"}') is None
    bad = acs.parse("{nope")
    assert isinstance(bad, Malformed)
    dispatch(core, 0.0, bad)
    assert core.stats.malformed == 1


def test_acs_actions_become_acs_messages() -> None:
    acs = AcsTransport("c1", MEDIA_FORMATS["pcm24k"])
    assert orjson.loads(acs.audio_message(FRAME)) == {"kind": "AudioData", "audioData": {"data": B64}}
    assert orjson.loads(acs.stop_message()) == {"kind": "StopAudio", "stopAudio": {}}
    assert acs.notify_message({"type": "transcript"}) is None, "a phone shows nothing"


def test_web_messages_become_neutral_inputs() -> None:
    web = WebTransport("w1")
    assert web.parse(FRAME) == CallerAudio(B64)
    assert web.parse('{"type":"played","ms":120.5}') == Played(120.5)
    assert web.parse('{"type":"hangup"}') == CallerLeft()
    assert web.parse('{"type":"dtmf","digits":"12#"}') == KeyPress("12#")
    for bad in (b"", b"\x00", bytes(4802), "[]", '{"type":"played","ms":true}', '{"type":"played","ms":1e999}'):
        assert isinstance(web.parse(bad), Malformed), bad


def test_a_web_call_core_tells_the_page_what_was_said_and_when_the_caller_speaks() -> None:
    core = make_core(notify=True)
    assert [a.event for a in ready(core) if isinstance(a, Notify)] == [{"type": "ready"}]
    events = core.server_event(0.1, {"type": "conversation.item.input_audio_transcription.completed",
                                     "transcript": "hi"})
    assert [a.event for a in events if isinstance(a, Notify)] == [
        {"type": "transcript", "role": "caller", "text": "hi", "interrupted": False}]
    started = core.server_event(0.2, {"type": "input_audio_buffer.speech_started"})
    assert Notify({"type": "speech", "state": "started"}) in started
    assert make_core().server_event(0.2, {"type": "input_audio_buffer.speech_stopped"}) == [], "ACS: nothing"


def test_web_actions_are_binary_audio_and_a_stop_message() -> None:
    web = WebTransport("w1")
    assert web.audio_message(FRAME) == FRAME
    assert orjson.loads(web.stop_message()) == {"type": "stop"}
    assert web.describe(web.stop_message())["kind"] == "StopAudio"
    assert web.describe(FRAME) == {"kind": "AudioData", "audioData": {"data": B64}}


def test_a_transports_played_report_caps_what_the_model_is_told_was_heard() -> None:
    core = make_core(lead_ms=100)
    ready(core)
    start_response(core, 0.0)
    delta(core, 0.0, 2000)
    frames = [a for _, a in run_clock(core, 0.0, 0.5) if isinstance(a, PlayAudio)]
    assert frames
    core.played(0.45, 200.0)  # the page's player started late: 200 ms played at 0.45 s
    actions = core.server_event(0.5, {"type": "input_audio_buffer.speech_started"})
    assert isinstance(actions[0], StopPlayback)
    [truncate] = [e for e in vl_events(actions) if e["type"] == "conversation.item.truncate"]
    assert truncate["audio_end_ms"] == 250, "report + the 50 ms since it, not the 500 ms pacing would say"


def test_transport_for_builds_each_transport_and_refuses_unknown_ones() -> None:
    assert transport_for("acs", "c", MEDIA_FORMATS["pcm16k"]).media.sample_rate == 16000
    assert transport_for("web", "c", MEDIA_FORMATS["pcm16k"]).media.sample_rate == 24000
    with pytest.raises(ValueError):
        transport_for("carrier-pigeon", "c", MEDIA_FORMATS["pcm24k"])
