"""The Twilio adapter against the neutral core: what each Media Streams message becomes, what each action sends, the
marks as the caller's playback clock, and the two model-audio modes."""

from __future__ import annotations

import base64

import orjson

from callbot.audio import Resampler, pcm16_to_ulaw, ulaw_to_pcm16
from callbot.bridge.core import BridgeCore, CoreConfig, PlayAudio, StopPlayback
from callbot.bridge.transport import CallerAudio, CallerLeft, KeyPress, Malformed, Played, dispatch, transport_for
from callbot.config import Settings
from callbot.twilio.adapter import TwilioTransport
from tests.bridge.test_core import run_clock, vl_events
from tests.twilio.twilio_side import CALL_SID, STREAM_SID, start_message

ULAW = bytes(range(256))[:160]


def started(mode: str = "g711_ulaw") -> TwilioTransport:
    t = TwilioTransport("c1", mode)  # type: ignore[arg-type]
    assert t.parse('{"event":"connected","protocol":"Call","version":"1.0.0"}') is None
    assert t.parse(start_message("tok")) is None
    return t


def media(payload: bytes, track: str = "inbound") -> str:
    return orjson.dumps({"event": "media", "streamSid": STREAM_SID,
                         "media": {"track": track, "payload": base64.b64encode(payload).decode()}}).decode()


def test_start_keeps_the_streams_ids_and_parameters_and_checks_the_media_format() -> None:
    t = started()
    assert (t.stream_sid, t.call_sid, t.parameters, t.format_ok) == (STREAM_SID, CALL_SID, {"token": "tok"}, True)
    assert isinstance(t.parse(start_message("tok")), Malformed), "one start a stream"
    other = TwilioTransport("c2")
    assert isinstance(other.parse(start_message("tok", encoding="audio/x-alaw")), Malformed)
    assert not other.format_ok


def test_media_dtmf_and_stop_become_neutral_inputs_and_g711_reaches_the_model_untouched() -> None:
    t = started()
    b64 = base64.b64encode(ULAW).decode()
    assert t.parse(media(ULAW)) == CallerAudio(b64)
    assert t.parse(media(b"\xff" * 7)) == CallerAudio(base64.b64encode(b"\xff" * 7).decode()), "any whole bytes"
    assert t.parse(media(ULAW, track="outbound")) is None
    assert t.parse('{"event":"dtmf","dtmf":{"track":"inbound_track","digit":"#"}}') == KeyPress("#")
    assert t.parse('{"event":"stop","stop":{}}') == CallerLeft()
    for bad in (b"\x00", "{", "[]", '{"event":"x"}', media(b""), media(bytes(1601)),
                '{"event":"media","streamSid":"MZother","media":{"payload":"AAAA"}}',
                '{"event":"dtmf","dtmf":{"digit":"12"}}', '{"event":"mark","mark":{"name":"a.b"}}'):
        assert isinstance(t.parse(bad), Malformed), bad


def test_each_audio_chunk_is_a_media_message_and_a_mark_named_by_the_ms_sent_since_the_last_clear() -> None:
    t = started()
    media1, mark1 = t.audio_message(ULAW)
    assert orjson.loads(media1) == {"event": "media", "streamSid": STREAM_SID,
                                    "media": {"payload": base64.b64encode(ULAW).decode()}}
    assert orjson.loads(mark1) == {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "0.20"}}
    assert orjson.loads(t.audio_message(ULAW * 3)[1])["mark"]["name"] == "0.80"
    assert t.parse('{"event":"mark","mark":{"name":"0.80"}}') == Played(80.0)
    assert orjson.loads(t.stop_message()) == {"event": "clear", "streamSid": STREAM_SID}
    # Twilio echoes the marks a clear discarded: not heard, so not a report of what played
    assert t.parse('{"event":"mark","mark":{"name":"0.80"}}') is None
    assert orjson.loads(t.audio_message(ULAW)[1])["mark"]["name"] == "1.20"
    assert t.parse('{"event":"mark","mark":{"name":"1.20"}}') == Played(20.0)
    assert t.describe(media1) == {"kind": "AudioData", "audioData": {"data": base64.b64encode(ULAW).decode()}}
    assert t.describe(t.stop_message())["kind"] == "StopAudio"
    assert t.describe(mark1) == orjson.loads(mark1)


def test_pcm16_mode_converts_with_stateful_resamplers_in_any_chunking() -> None:
    t = started("pcm16")
    assert t.media.voicelive_input == "pcm16" and t.media.sample_rate == 24000
    caller = pcm16_to_ulaw(b"".join(int(9000 * ((i % 40) / 20 - 1)).to_bytes(2, "little", signed=True)
                                    for i in range(1600)))
    got = b"".join(base64.b64decode(t.parse(media(caller[i:i + 160])).b64)  # type: ignore[union-attr]
                   for i in range(0, len(caller), 160))
    assert got == Resampler(8000, 24000).process(ulaw_to_pcm16(caller)), "as if converted at once"
    bot = Resampler(8000, 24000).process(ulaw_to_pcm16(caller))
    out = b"".join(base64.b64decode(orjson.loads(t.audio_message(bot[i:i + 960])[0])["media"]["payload"])
                   for i in range(0, len(bot), 960))
    assert out == pcm16_to_ulaw(Resampler(24000, 8000).process(bot))
    assert orjson.loads(t.audio_message(bot[:960])[1])["mark"]["name"] == "0.220"


def test_with_the_core_marks_decide_what_the_model_is_told_was_heard() -> None:
    settings = Settings(_env_file=None, callbot_greeting="", callbot_playback_lead_ms=100)  # type: ignore[call-arg]
    t = transport_for("twilio", "c1", t_media := TwilioTransport("x").media)
    assert t_media.voicelive_output == "g711_ulaw"
    core = BridgeCore(CoreConfig.from_settings("c1", settings, t.media, t.name, t.notify))
    core.start(0.0)
    core.media_started(0.0)
    core.server_event(0.0, {"type": "session.updated", "session": {}})
    assert t.parse(start_message("tok")) is None
    core.server_event(0.0, {"type": "response.created", "response": {"id": "r1", "status": "in_progress"}})
    core.server_event(0.0, {"type": "response.output_item.added", "response_id": "r1", "item": {"id": "i1"}})
    core.server_event(0.0, {"type": "response.audio.delta", "response_id": "r1", "item_id": "i1", "content_index": 0,
                            "delta": base64.b64encode(b"\x55" * 8 * 2000).decode()})
    frames = [a for _, a in run_clock(core, 0.0, 0.5) if isinstance(a, PlayAudio)]
    assert frames and all(len(f.pcm) == 160 for f in frames), "mu-law frames of 20 ms"
    marks = [t.audio_message(f.pcm)[1] for f in frames]
    # Twilio has played 200 ms at 0.45 s (its buffer started late): the echo of the tenth mark
    echo = orjson.loads(marks[9])
    assert echo["mark"]["name"] == "0.200"
    dispatch(core, 0.45, t.parse(orjson.dumps(echo).decode()))  # type: ignore[arg-type]
    actions = core.server_event(0.46, {"type": "input_audio_buffer.speech_started"})
    assert isinstance(actions[0], StopPlayback)
    [truncate] = [e for e in vl_events(actions) if e["type"] == "conversation.item.truncate"]
    assert truncate["audio_end_ms"] == 210, "the last echoed mark + the 10 ms since, not the 460 ms of pacing"
