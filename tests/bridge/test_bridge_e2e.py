"""The media bridge end to end: a simulated ACS media socket -> callbot under uvicorn -> the real Voice Live SDK ->
a local Voice Live protocol server, and back."""

from __future__ import annotations

import asyncio
import time

import pytest

from callbot.local.acs.network import PhoneCall, PhoneNetwork
from callbot.local.voicelive.server import VoiceLiveServer
from tests.harness import WEBHOOK_SECRET, run_callbot


def speechlike(ms: int, seed: int = 1) -> bytes:
    """Deterministic non-silent PCM (never an all-zero frame)."""
    rnd = bytes((i * 37 + seed * 11) % 251 + 1 for i in range(ms * 48))
    return rnd


async def place(phone: PhoneNetwork, url: str) -> PhoneCall:
    return await phone.place_call(url, WEBHOOK_SECRET)


async def test_caller_audio_reaches_voicelive_byte_exact_in_pcm24k(phone: PhoneNetwork,
                                                                    voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        session = await voicelive.wait_for_session()
        update = await session.wait_for("session.update")
        assert update["session"]["input_audio_sampling_rate"] == 24000
        assert update["session"]["output_audio_format"] == "pcm16"
        audio = speechlike(1000) + bytes(960 * 10)  # speech, then silent frames, which must be forwarded too
        await call.stream(audio, realtime=False)
        await session.wait_for("input_audio_buffer.append", count=60)
        assert bytes(session.input_audio) == audio
        await call.hang_up()


@pytest.mark.parametrize("chunk_ms", [20, 40, 100])
async def test_model_audio_comes_back_as_whole_frames_in_chunks_paced_at_real_time(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, chunk_ms: int) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_playback_chunk_ms=chunk_ms,
                           callbot_playback_lead_ms=max(120, 2 * chunk_ms), **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        session = await voicelive.wait_for_session()
        await session.wait_for("session.update")
        bot = speechlike(1000, seed=5) + b"\x07" * 100  # not a whole number of frames: the tail is padded
        handle = await session.start_response(text="hello", audio=bot, chunk_ms=70)
        await handle.wait()
        await call.wait_for_audio(frames=51)
        frames = [r.audio for r in call.received if r.kind == "AudioData"]
        chunk_bytes = 960 * chunk_ms // 20
        assert all(len(f) % 960 == 0 and 0 < len(f) <= chunk_bytes for f in frames)
        # full chunks but where the queue ran short (the first delta's odd frame, the last frame)
        assert -(-51 // (chunk_ms // 20)) <= len(frames) <= -(-51 // (chunk_ms // 20)) + 2
        assert b"".join(frames)[: len(bot)] == bot
        assert b"".join(frames)[len(bot):] == bytes(960 * 51 - len(bot))
        # paced at real time: 1 s of audio takes at least ~1 s minus the lead to arrive
        arrivals = [r.at for r in call.received if r.kind == "AudioData"]
        assert arrivals[-1] - arrivals[0] >= 0.8
        await call.hang_up()


def arrival(session: object, event: dict) -> float:
    received = session.received  # type: ignore[attr-defined]
    return session.received_at[next(i for i, e in enumerate(received) if e is event)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("lead_ms", [120, 500, 1000])
@pytest.mark.parametrize("streaming", [True, False], ids=["response-in-progress", "response-complete-still-playing"])
async def test_caller_speech_during_playback_stops_audio_cancels_and_truncates_at_what_was_heard(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, streaming: bool, lead_ms: int) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_playback_lead_ms=lead_ms,
                           **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        session = await voicelive.wait_for_session()
        await session.wait_for("session.update")
        handle = await session.start_response(text="a long answer", audio=speechlike(4000), chunk_ms=100,
                                              realtime_factor=0.5 if streaming else 0.0)
        await call.wait_for_audio(frames=1)
        first_frame_at = next(r.at for r in call.received if r.kind == "AudioData")
        await asyncio.sleep(0.8)
        barge_at = time.monotonic()
        await session.speech_started(audio_start_ms=1000)
        stop = await call.wait_for_stop()
        truncate = await session.wait_for("conversation.item.truncate")
        assert truncate["item_id"] == handle.item_ids[0]
        assert truncate["content_index"] == 0
        # ACS plays from the moment the first frame arrives: heard = wall time since then, at every lead
        heard_ms = (barge_at - first_frame_at) * 1000
        assert abs(truncate["audio_end_ms"] - heard_ms) <= 20 + 30, (truncate["audio_end_ms"], heard_ms)
        assert stop.at <= arrival(session, truncate) + 0.05, "StopAudio reaches ACS first"
        types = [e["type"] for e in session.received]
        if streaming:
            cancel = await session.wait_for("response.cancel")
            assert cancel.get("response_id") in (None, handle.response_id)
            assert types.index("response.cancel") < types.index("conversation.item.truncate")
        else:
            assert "response.cancel" not in types, "a completed response is not cancelled"
        await asyncio.sleep(0.5)
        after_stop = [r for r in call.received if r.at > stop.at and r.kind == "AudioData"]
        assert after_stop == [], "no bot audio may follow StopAudio"
        assert call.kinds().count("StopAudio") == 1
        await call.hang_up()


async def test_malformed_media_messages_are_skipped_and_the_call_goes_on(phone: PhoneNetwork,
                                                                         voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        session = await voicelive.wait_for_session()
        await session.wait_for("session.update")
        bad = [
            "{not json",
            '{"kind":"AudioData","audioData":{"data":"@@@not base64@@@"}}',
            '{"kind":"AudioData","audioData":{"data":12}}',
            '{"kind":"AudioData","audioData":"x"}',
            '{"kind":"AudioData","audioData":{"data":"AAAA"}}',
            '{"kind":7}',
            "[1,2,3]",
            '{"kind":"SomethingNew","somethingNew":{}}',
            '{"kind":"AudioData","audioData":{"data":"' + "A" * (1024 * 1024) + '"}}',
            '{"kind":"DtmfData","dtmfData":{"data":"5"}}',
        ]
        for text in bad:
            await call.send_raw(text)
        await call.send_raw(b"\x00\x01binary")
        audio = speechlike(200)
        await call.stream(audio, realtime=False)
        await session.wait_for("input_audio_buffer.append", count=10)
        assert bytes(session.input_audio) == audio
        handle = await session.start_response(text="still here", audio=speechlike(100))
        await handle.wait()
        await call.wait_for_audio(frames=5)
        services = cb.services
        assert services.registry.calls, "the call is still live"
        await call.hang_up()


async def test_caller_hang_up_closes_the_voicelive_session_within_one_second(phone: PhoneNetwork,
                                                                             voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        session = await voicelive.wait_for_session()
        await session.wait_for("session.update")
        await session.start_response(text="talking", audio=speechlike(3000))
        await call.wait_for_audio(frames=3)
        closed_at = time.monotonic()
        await call.ws.close()
        await asyncio.wait_for(session.closed.wait(), 1.0)
        assert time.monotonic() - closed_at < 1.0
        for _ in range(100):
            if not cb.services.registry.calls:
                break
            await asyncio.sleep(0.01)
        assert not cb.services.registry.calls


async def test_greeting_is_requested_when_the_session_is_ready(phone: PhoneNetwork,
                                                               voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_greeting="Welcome to the test line",
                           **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        session = await voicelive.wait_for_session()
        create = await session.wait_for("response.create")
        message = create["response"]["pre_generated_assistant_message"]
        assert message["content"][0]["text"] == "Welcome to the test line"
        types = [e["type"] for e in session.received]
        assert types.index("session.update") < types.index("response.create")
        await call.wait_for_audio(frames=5)  # the stand-in speaks it and it reaches the caller
        await call.hang_up()


@pytest.mark.parametrize("voice,expected", [("alloy", {"type": "openai", "name": "alloy"}),
                                            ("en-US-AvaNeural", {"type": "azure-standard",
                                                                 "name": "en-US-AvaNeural"})])
async def test_session_update_is_built_from_settings(phone: PhoneNetwork, voicelive: VoiceLiveServer, voice: str,
                                                     expected: dict[str, str]) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_voice=voice,
                           callbot_media_format="pcm16k", callbot_turn_detection="server_vad",
                           callbot_vad_threshold=0.7, callbot_vad_silence_ms=650,
                           callbot_instructions="Be brief.", callbot_noise_reduction="off",
                           **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        assert call.answered.audio_format == "pcm16KMono"
        session = await voicelive.wait_for_session()
        applied = (await session.wait_for("session.update"))["session"]
        assert applied["voice"] == expected
        assert applied["instructions"] == "Be brief."
        assert applied["input_audio_sampling_rate"] == 16000
        assert applied["output_audio_format"] == "pcm16_16000hz"
        assert applied["turn_detection"]["type"] == "server_vad"
        assert applied["turn_detection"]["threshold"] == 0.7
        assert applied["turn_detection"]["silence_duration_ms"] == 650
        assert "input_audio_noise_reduction" not in applied
        assert applied["input_audio_echo_cancellation"] == {"type": "server_echo_cancellation"}
        audio = speechlike(200)[: 640 * 10]
        await call.stream(audio, realtime=False)
        await session.wait_for("input_audio_buffer.append", count=10)
        assert bytes(session.input_audio) == audio
        handle = await session.start_response(text="x", audio=speechlike(200)[:6400])
        await handle.wait()
        await call.wait_for_audio(frames=10)
        assert all(len(r.audio) % 640 == 0 for r in call.received if r.kind == "AudioData")
        await call.hang_up()


def phone_env(phone: PhoneNetwork) -> dict[str, str]:
    return {k.lower(): v for k, v in phone.env().items()}



async def test_agent_mode_connects_with_agent_and_project_instead_of_model(phone: PhoneNetwork,
                                                                           voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, azure_voicelive_agent_name="front-desk",
                           azure_voicelive_project_name="contoso", **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        session = await voicelive.wait_for_session()
        await session.wait_for("session.update")
        assert session.query["agent-name"] == "front-desk"
        assert session.query["agent-project-name"] == "contoso"
        assert "model" not in session.query
        assert session.headers["api-key"] == cb.settings.azure_voicelive_api_key.get_secret_value()  # type: ignore[union-attr]
        await call.hang_up()


async def test_key_presses_on_the_phone_reach_the_model_as_one_turn_after_a_pause(
        phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_dtmf_pause_ms=300,
                           **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        session = await voicelive.wait_for_session()
        await session.wait_for("session.update")
        for key in "1234":
            await call.send_raw('{"kind":"DtmfData","dtmfData":{"data":"' + key + '"}}')
        item = await session.wait_for("conversation.item.create", timeout=3)
        assert item["item"]["content"] == [{"type": "input_text", "text": "The caller pressed 1 2 3 4"}]
        await session.wait_for("response.create", timeout=2)
        await call.hang_up()
        await asyncio.wait_for(session.closed.wait(), 2)
    assert cb.services.metrics.counters["dtmf_sequences"] == 1
