"""The offline Voice Live stand-in against the real azure-ai-voicelive SDK: real VAD, ASR, responder and TTS."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from azure.ai.voicelive.aio import ConnectionError as VoiceLiveConnectionError
from azure.ai.voicelive.aio import VoiceLiveConnection, connect
from azure.core.credentials import AzureKeyCredential

from callbot.audio import pcm16_to_ulaw
from callbot.local.caller.simulator import caller_speaker
from callbot.local.caller.telephone import TelephoneLeg, speech_bounds
from callbot.local.voicelive.faq import GOODBYE, NOT_UNDERSTOOD, YOU_SAID, Responder, caller_phrases, parse_faq
from callbot.local.voicelive.standin import Standin
from tests.harness import StaticToken

FAQ = """You answer for Contoso Bakery.
Q: What are your opening hours? | When are you open?
A: We are open from seven to six, Monday to Saturday.
Q: Do you deliver?
A: Yes, within five miles of the shop.
- Q: Where are you?
  A: At twelve Main Street.
"""
RATE = 24000
FRAME = 960  # 20 ms at 24 kHz
LONG_TEXT = "This is a rather long answer that goes on for a while so that there is time to interrupt it. " * 3


@pytest.fixture
async def standin() -> AsyncIterator[Standin]:
    async with Standin(FAQ, accept_bearer=True, realtime_factor=0.1) as server:
        yield server


def session_config(**turn: Any) -> dict[str, Any]:
    return {
        "instructions": FAQ,
        "input_audio_sampling_rate": RATE,
        "input_audio_transcription": {"model": "azure-speech"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500, "prefix_padding_ms": 300, **turn},
    }


async def configure(conn: VoiceLiveConnection, **session: Any) -> None:
    await conn.send({"type": "session.update", "session": session})
    await until(conn, "session.updated")


async def until(conn: VoiceLiveConnection, type_: str, timeout: float = 10.0) -> list[dict[str, Any]]:  # noqa: ASYNC109
    """Events up to and including the first of ``type_``, as dicts."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            events.append((await conn.recv()).as_dict())
            if events[-1]["type"] == type_:
                return events


async def append(conn: VoiceLiveConnection, pcm: bytes, *, realtime: bool = False,
                 sent_at: list[float] | None = None) -> None:
    """Send ``pcm`` in 20 ms appends; ``sent_at`` gets each one's send time."""
    start = time.monotonic()
    for i, offset in enumerate(range(0, len(pcm), FRAME)):
        if realtime:
            await asyncio.sleep(max(0.0, start + i * 0.02 - time.monotonic()))
        if sent_at is not None:
            sent_at.append(time.monotonic())
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[offset : offset + FRAME]).decode())


def silence(ms: int) -> bytes:
    return bytes(RATE * ms // 1000 * 2)


def spoken(text: str) -> bytes:
    """The caller's voice through the telephone leg, as callbot would forward it."""
    return TelephoneLeg(RATE).frames(caller_speaker().synthesize(text, RATE), FRAME)


# -- the responder (pure) ------------------------------------------------------------------------------------------


def test_faq_is_read_from_q_and_a_lines_with_alternative_questions() -> None:
    faq = parse_faq(FAQ)
    assert [e.questions for e in faq] == [("What are your opening hours?", "When are you open?"), ("Do you deliver?",),
                                          ("Where are you?",)]  # fmt: skip
    assert faq[2].answer == "At twelve Main Street."
    assert "when are you open" in caller_phrases(FAQ) and "goodbye" in caller_phrases(FAQ)


@pytest.mark.parametrize(("heard", "reply"), [
    ("what are your opening hours", "We are open from seven to six, Monday to Saturday."),
    ("when are you open", "We are open from seven to six, Monday to Saturday."),
    ("do you deliver", "Yes, within five miles of the shop."),
    ("goodbye", GOODBYE),
    ("", NOT_UNDERSTOOD),
    ("i have a question", YOU_SAID.format(text="i have a question")),
])  # fmt: skip
def test_responder_answers_from_the_faq_else_small_talk_else_echo(heard: str, reply: str) -> None:
    assert Responder(FAQ).reply(heard) == reply


# -- the protocol, against the SDK ---------------------------------------------------------------------------------


async def test_session_update_invalid_config_and_unknown_events(standin: Standin) -> None:
    async with connect(endpoint=standin.url, credential=standin.credential, model="gpt-realtime") as conn:
        await until(conn, "session.created")
        await conn.send({"type": "session.update", "session": session_config()})
        updated = (await until(conn, "session.updated"))[-1]
        assert updated["session"]["instructions"] == FAQ
        assert updated["session"]["turn_detection"]["silence_duration_ms"] == 500
        await conn.send({"type": "session.update", "session": {"input_audio_sampling_rate": 44100}})
        assert (await until(conn, "error"))[-1]["error"]["param"] == "session.input_audio_sampling_rate"
        await conn.send({"type": "conversation.teleport"})
        assert (await until(conn, "error"))[-1]["error"]["code"] == "unknown_event"


async def test_api_key_or_bearer_token_is_needed(standin: Standin) -> None:
    async with connect(endpoint=standin.url, credential=StaticToken(), model="m") as conn:
        assert (await until(conn, "session.created"))[-1]["session"]["model"] == "m"
    with pytest.raises(VoiceLiveConnectionError, match="401"):
        async with connect(endpoint=standin.url, credential=AzureKeyCredential("wrong"), model="m"):
            pass


async def test_vad_reports_speech_onset_within_200_ms_streaming_in_real_time(standin: Standin) -> None:
    speech = spoken("do you deliver")
    audio = silence(800) + speech + silence(900)
    first, last = speech_bounds(speech, FRAME)
    onset_ms, end_ms = 800 + 20 * first, 800 + 20 * last
    async with connect(endpoint=standin.url, credential=standin.credential, model="m") as conn:
        await configure(conn, **session_config(prefix_padding_ms=0, create_response=False))
        sent_at: list[float] = []
        sender = asyncio.create_task(append(conn, audio, realtime=True, sent_at=sent_at))
        started = (await until(conn, "input_audio_buffer.speech_started"))[-1]
        detected_after_ms = (time.monotonic() - sent_at[onset_ms // 20]) * 1000
        stopped = (await until(conn, "input_audio_buffer.speech_stopped"))[-1]
        await sender
    assert abs(started["audio_start_ms"] - onset_ms) <= 200
    assert detected_after_ms <= 200, f"speech_started came {detected_after_ms:.0f} ms after the onset was sent"
    assert end_ms - 100 <= stopped["audio_end_ms"] <= end_ms + 250
    assert stopped["item_id"] == started["item_id"]


async def test_prefix_padding_moves_audio_start_back(standin: Standin) -> None:
    speech = spoken("where are you")
    first, _ = speech_bounds(speech, FRAME)
    async with connect(endpoint=standin.url, credential=standin.credential, model="m") as conn:
        await configure(conn, **session_config(prefix_padding_ms=300, create_response=False))
        await append(conn, silence(1000) + speech + silence(800))
        started = (await until(conn, "input_audio_buffer.speech_started"))[-1]
    assert abs(started["audio_start_ms"] - (1000 + 20 * first - 300)) <= 200


@pytest.mark.parametrize("question", ["what are your opening hours", "do you deliver", "when are you open"])
async def test_faq_questions_in_the_packaged_voice_are_transcribed_exactly_and_answered(standin: Standin,
                                                                                         question: str) -> None:
    async with connect(endpoint=standin.url, credential=standin.credential, model="m") as conn:
        await configure(conn, **session_config())
        await append(conn, silence(500) + spoken(question) + silence(800))
        events = await until(conn, "response.done")
    by_type = {e["type"]: e for e in events}
    assert by_type["conversation.item.input_audio_transcription.completed"]["transcript"] == question
    answer = Responder(FAQ).reply(question)
    assert by_type["response.audio_transcript.done"]["transcript"] == answer
    assert by_type["response.done"]["response"]["status"] == "completed"
    types = [e["type"] for e in events]
    assert types.index("input_audio_buffer.speech_stopped") < types.index("response.created")
    assert types.index("response.created") < types.index("response.output_item.added") < types.index(
        "response.audio.delta")


async def test_audio_deltas_stream_faster_than_real_time(standin: Standin) -> None:
    async with connect(endpoint=standin.url, credential=standin.credential, model="m") as conn:
        await configure(conn, **session_config())
        await conn.send({"type": "response.create", "response": {"pre_generated_assistant_message": {
            "type": "message", "role": "assistant", "content": [{"type": "text", "text": "Welcome to the bakery."}]}}})
        started = time.monotonic()
        events = await until(conn, "response.done")
        elapsed_ms = (time.monotonic() - started) * 1000
    audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta")
    audio_ms = len(audio) / 48
    assert audio_ms > 800 and elapsed_ms < audio_ms * 0.8
    assert max(np.abs(np.frombuffer(audio, dtype="<i2"))) > 3000, "it is speech, not silence"


async def long_response(conn: VoiceLiveConnection) -> list[dict[str, Any]]:
    await conn.send({"type": "response.create", "response": {"pre_generated_assistant_message": {
        "type": "message", "role": "assistant", "content": [{"type": "text", "text": LONG_TEXT}]}}})
    return await until(conn, "response.audio.delta")


async def test_response_cancel_ends_the_response_as_cancelled(standin: Standin) -> None:
    async with connect(endpoint=standin.url, credential=standin.credential, model="m") as conn:
        await configure(conn, **session_config())
        events = await long_response(conn)
        await conn.send({"type": "response.cancel"})
        done = (await until(conn, "response.done"))[-1]
    assert done["response"]["id"] == events[0]["response"]["id"]
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "client_cancelled"


async def test_truncate_within_the_audio_works_and_past_its_end_is_an_error(standin: Standin) -> None:
    async with connect(endpoint=standin.url, credential=standin.credential, model="m") as conn:
        await configure(conn, **session_config())
        await conn.send({"type": "response.create", "response": {"pre_generated_assistant_message": {
            "type": "message", "role": "assistant", "content": [{"type": "text", "text": "Two seconds or so."}]}}})
        events = await until(conn, "response.done")
        item_id = next(e["item"]["id"] for e in events if e["type"] == "response.output_item.added")
        audio_ms = sum(len(base64.b64decode(e["delta"])) for e in events if e["type"] == "response.audio.delta") // 48
        await conn.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                         "audio_end_ms": audio_ms + 500})  # fmt: skip
        error = (await until(conn, "error"))[-1]["error"]
        await conn.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                         "audio_end_ms": audio_ms // 2})  # fmt: skip
        truncated = (await until(conn, "conversation.item.truncated"))[-1]
    assert error["code"] == "invalid_value" and "already shorter" in error["message"]
    assert truncated["audio_end_ms"] == audio_ms // 2


async def test_caller_speech_during_a_response_cancels_it_server_side(standin: Standin) -> None:
    async with connect(endpoint=standin.url, credential=standin.credential, model="m") as conn:
        await configure(conn, **session_config(create_response=False))
        events = await long_response(conn)
        await append(conn, silence(400) + spoken("goodbye") + silence(700))
        rest = await until(conn, "response.done")
    types = [e["type"] for e in rest]
    assert types.index("input_audio_buffer.speech_started") < types.index("response.done")
    assert rest[-1]["response"]["id"] == events[0]["response"]["id"]
    assert rest[-1]["response"]["status"] == "cancelled"
    assert rest[-1]["response"]["status_details"]["reason"] == "turn_detected"


async def test_ulaw_input_without_turn_detection_is_transcribed_on_commit(standin: Standin) -> None:
    narrow = caller_speaker().synthesize("what are your opening hours", 8000)
    async with connect(endpoint=standin.url, credential=standin.credential, model="m") as conn:
        await configure(conn, instructions=FAQ, input_audio_format="g711_ulaw", turn_detection=None,
                        input_audio_transcription={"model": "azure-speech"})  # fmt: skip
        ulaw = pcm16_to_ulaw(bytes(8000) + narrow + bytes(8000))
        for offset in range(0, len(ulaw), 160):
            await conn.input_audio_buffer.append(audio=base64.b64encode(ulaw[offset : offset + 160]).decode())
        await conn.send({"type": "input_audio_buffer.commit"})
        await conn.send({"type": "response.create"})
        events = await until(conn, "response.done")
    by_type = {e["type"]: e for e in events}
    assert "input_audio_buffer.speech_started" not in by_type
    assert by_type["conversation.item.input_audio_transcription.completed"]["transcript"] == (
        "what are your opening hours")
    assert by_type["response.audio_transcript.done"]["transcript"].startswith("We are open")
