"""Twilio calls end to end: a signed webhook and a Media Streams client (tests.twilio.twilio_side) -> callbot under
uvicorn -> the real Voice Live SDK -> the local Voice Live protocol server, in both model-audio modes; hang-up and
transfer through a local Twilio REST server that checks the basic auth."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path
from typing import Any

import numpy
import pytest

from callbot.audio import Resampler, pcm16_to_ulaw, ulaw_to_pcm16
from callbot.export_wav import export_wav
from callbot.local.voicelive.server import VoiceLiveServer
from callbot.local.voicelive.tools import FunctionCall
from callbot.recording import load_recording
from callbot.replay import check_recording
from tests.harness import run_callbot
from tests.twilio.twilio_side import CALL_SID, STREAM_SID, answered_call, stream, twilio_env, twilio_rest


def speech_ulaw(ms: int, seed: int = 1) -> bytes:
    """Speech-like mu-law (a wandering tone): decodes to something a resampler passes nearly unchanged."""
    import math

    pcm = bytearray()
    for i in range(ms * 8):
        value = int(8000 * math.sin(i * (0.3 + 0.1 * seed) + 2 * math.sin(i / 400)))
        pcm += value.to_bytes(2, "little", signed=True)
    return pcm16_to_ulaw(bytes(pcm))


def model_audio(mode: str, ms: int, seed: int = 4) -> bytes:
    ulaw = speech_ulaw(ms, seed)
    if mode == "g711_ulaw":
        return ulaw
    up = Resampler(8000, 24000)
    return up.process(ulaw_to_pcm16(ulaw)) + up.flush()


async def until_idle(cb: Any, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        await cb.services.registry.wait_idle()


@pytest.mark.parametrize("mode", ["g711_ulaw", "pcm16"])
async def test_a_twilio_call_reaches_the_model_and_back_paced_with_marks_and_a_barge_in_truncates_at_the_heard_mark(
        voicelive: VoiceLiveServer, tmp_path: Path, mode: str) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_recordings_dir=tmp_path,
                           callbot_twilio_model_audio=mode, **twilio_env()) as cb:
        url, token = await answered_call(cb.url)
        session = await voicelive.wait_for_session()
        update = await session.wait_for("session.update")
        assert update["session"]["input_audio_format"] == update["session"]["output_audio_format"] == \
            ("g711_ulaw" if mode == "g711_ulaw" else "pcm16")
        async with stream(url, token, start_delay_s=0.3) as twilio:
            caller = speech_ulaw(400)
            await twilio.caller(caller)
            await session.wait_for("input_audio_buffer.append", count=20)
            if mode == "g711_ulaw":
                assert bytes(session.input_audio) == caller, "Twilio's bytes reach the model untouched"
            else:
                up = Resampler(8000, 24000)
                assert bytes(session.input_audio) == up.process(ulaw_to_pcm16(caller)), "mu-law -> PCM 24 kHz"
            answer = model_audio(mode, 3000)
            handle = await session.start_response(text="We open at nine.", audio=answer, chunk_ms=100)
            await twilio.wait_for("mark", count=5)
            await asyncio.sleep(0.7)
            heard_before = [name for _, name in twilio.echoed]
            assert heard_before, "marks echo as the audio plays"
            last = int(heard_before[-1].split(".")[1])
            await session.speech_started(audio_start_ms=900)
            truncate = await session.wait_for("conversation.item.truncate")
            clear = await twilio.wait_for("clear")
            assert clear == {"event": "clear", "streamSid": STREAM_SID}
            assert truncate["item_id"] == handle.item_ids[0]
            first_media = twilio.events("media")[0][0]
            pacing_ms = (time.monotonic() - first_media) * 1000
            # the caller heard up to the last echoed mark (plus under a frame since): the mark, not pacing, decides
            assert last - 20 <= truncate["audio_end_ms"] <= last + 20 + 30, (truncate, last, pacing_ms)
            assert truncate["audio_end_ms"] < pacing_ms - 200, "Twilio's jitter buffer lag is not counted as heard"
            clear_at = twilio.events("clear")[0][0]
            await asyncio.sleep(0.3)
            assert [b for t, b in twilio.received if t > clear_at and b["event"] == "media"] == []
            # every media message is followed by its mark, named by the ms sent since the last clear
            sent = [b for t, b in twilio.received if t < clear_at and b["event"] in ("media", "mark")]
            assert [b["event"] for b in sent] == ["media", "mark"] * (len(sent) // 2)
            names = [b["mark"]["name"] for b in sent if b["event"] == "mark"]
            assert names == [f"0.{20 * (i + 1)}" for i in range(len(names))]
            # paced: never more than the lead (120 ms) ahead of real time
            for i, (t, _) in enumerate(twilio.events("media")):
                if t < clear_at:
                    assert (i + 1) * 20 <= (t - first_media) * 1000 + 20 + 120 + 60
            bot = twilio.bot_audio()
            assert len(bot) % 160 == 0
            if mode == "g711_ulaw":
                assert bot == answer[:len(bot)], "the model's mu-law reaches Twilio untouched"
            await twilio.send({"event": "stop", "sequenceNumber": "99", "streamSid": STREAM_SID,
                               "stop": {"accountSid": "AC", "callSid": CALL_SID}})
            stopped = time.monotonic()
            await asyncio.wait_for(session.closed.wait(), 1.0)
            assert time.monotonic() - stopped < 1.0
        await until_idle(cb)
        counters = cb.services.metrics.counters
        assert counters["calls_twilio"] == 1 and counters["barge_ins"] == 1
    [path] = await asyncio.to_thread(lambda: list(tmp_path.glob("*.jsonl")))
    text = await asyncio.to_thread(path.read_text)
    assert token not in text, "the stream token is not recorded"
    recording = load_recording(path)
    assert recording.transport == "twilio"
    report = check_recording(recording)
    assert report.ok, report.text()
    # the WAV is what the Twilio line carried (mu-law 8 kHz decoded) in both model-audio modes
    summary = await asyncio.to_thread(export_wav, recording, tmp_path / "call.wav")
    assert summary.sample_rate == 8000 and summary.cuts == 1
    with wave.open(str(tmp_path / "call.wav")) as wav:
        assert wav.getframerate() == 8000
        frames = numpy.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    caller_pcm = numpy.frombuffer(ulaw_to_pcm16(caller), dtype="<i2")
    heard = numpy.frombuffer(ulaw_to_pcm16(bot), dtype="<i2")
    assert _contains(frames[:, 0], caller_pcm), "the caller's words on the left"
    assert _contains(frames[:, 1], heard[:4000]), "the bot's answer, as sent to Twilio, on the right"


def _contains(channel: numpy.ndarray[Any, Any], part: numpy.ndarray[Any, Any]) -> bool:
    """`part`'s samples appear, in order and back to back, somewhere in `channel`."""
    data, needle = channel.tobytes(), part.tobytes()
    at = data.find(needle)
    while at != -1 and at % 2:
        at = data.find(needle, at + 1)
    return at != -1


async def test_malformed_twilio_messages_are_skipped_and_counted_and_dtmf_reaches_the_keypad(
        voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_dtmf_pause_ms=200, **twilio_env()) as cb:
        url, token = await answered_call(cb.url)
        session = await voicelive.wait_for_session()
        async with stream(url, token) as twilio:
            bad = ["{not json", "[1]", '{"event": "dance"}', '{"event": "media", "media": {"payload": "***"}}',
                   '{"event": "media", "media": {"payload": ""}}',
                   '{"event": "media", "media": {"payload": "' + "A" * 4000 + '"}}',
                   '{"event": "dtmf", "dtmf": {"digit": "x"}}', '{"event": "mark", "mark": {"name": "nope"}}',
                   '{"event": "mark", "mark": {}}', "x" * 20_000]
            for text in bad:
                await twilio.send(text)
            await twilio.ws.send_bytes(b"\x00\x01")
            await twilio.send('{"event": "media", "media": {"track": "outbound", "payload": "AAAA"}}')  # not ours
            await twilio.caller(b"\x10" * 160)
            await session.wait_for("input_audio_buffer.append")
            assert bytes(session.input_audio) == b"\x10" * 160, "only the good frame reached the model"
            await twilio.send({"event": "dtmf", "streamSid": "MZ", "dtmf": {"track": "inbound_track", "digit": "5"}})
            await twilio.send({"event": "dtmf", "streamSid": "MZ", "dtmf": {"track": "inbound_track", "digit": "#"}})
            item = await session.wait_for("conversation.item.create")
            assert item["item"]["content"][0]["text"] == "The caller pressed 5 #"
            await twilio.send('{"event": "stop"}')
            await asyncio.wait_for(session.closed.wait(), 2)
        await until_idle(cb)
        assert cb.services.metrics.counters["media_malformed"] == len(bad) + 1
        assert cb.services.metrics.counters["dtmf_keys"] == 2


async def test_the_agent_hangs_up_a_twilio_call_through_the_rest_api(voicelive: VoiceLiveServer) -> None:
    async with twilio_rest() as rest, run_callbot(azure_voicelive_endpoint=voicelive.url,
                                                   **twilio_env(rest)) as cb:
        url, token = await answered_call(cb.url)
        session = await voicelive.wait_for_session()
        async with stream(url, token, start_delay_s=0.0) as twilio:
            await session.wait_for("session.update")
            handle = await session.start_response(text="Goodbye!", audio=model_audio("g711_ulaw", 400),
                                                  calls=(FunctionCall("end_call", "{}"),))
            await handle.wait(timeout=10.0)
            sid, form = await rest.wait_update()
            assert (sid, form) == (CALL_SID, {"Status": "completed"})
            assert len(twilio.bot_audio()) >= 400 * 8 - 160, "the goodbye played before the hang-up"
        await until_idle(cb)
        assert rest.unauthorized == 0
        assert cb.services.metrics.counters["agent_hangups"] == 1


@pytest.mark.parametrize("target", ["+14255550123", "8:acs:resource_user"])
async def test_the_agent_transfers_a_twilio_call_by_new_twiml_dialing_the_target(
        voicelive: VoiceLiveServer, target: str) -> None:
    async with twilio_rest() as rest, run_callbot(azure_voicelive_endpoint=voicelive.url,
                                                   callbot_transfer_target=target, callbot_transfer_message="",
                                                   **twilio_env(rest)) as cb:
        url, token = await answered_call(cb.url)
        session = await voicelive.wait_for_session()
        async with stream(url, token) as twilio:
            update = await session.wait_for("session.update")
            assert [t["name"] for t in update["session"]["tools"]] == ["end_call", "transfer_to_human"]
            await session.start_response(audio=b"", items=0, calls=(FunctionCall("transfer_to_human", "{}"),))
            if target.startswith("+"):
                sid, form = await rest.wait_update()
                assert sid == CALL_SID
                assert form == {"Twiml": '<?xml version="1.0" encoding="UTF-8"?><Response><Dial>'
                                         f'<Number>{target}</Number></Dial></Response>'}
                await asyncio.wait_for(session.closed.wait(), 5)  # callbot left the call; Twilio dials
                await until_idle(cb)
                assert cb.services.metrics.counters["transfers_accepted"] == 1
                assert rest.updates == [(sid, form)], "no hang-up after the transfer"
            else:  # an ACS id cannot be dialled from Twilio: the model hears why, the call goes on
                output = await session.wait_for("conversation.item.create")
                assert "not a phone number" in output["item"]["output"]
                assert rest.updates == []
            await twilio.send('{"event": "stop"}')
        await until_idle(cb)
