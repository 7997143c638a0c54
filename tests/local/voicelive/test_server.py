"""The local Voice Live server against the real azure-ai-voicelive SDK."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from azure.ai.voicelive.aio import ConnectionError as VoiceLiveConnectionError
from azure.ai.voicelive.aio import VoiceLiveConnection, connect
from azure.ai.voicelive.models import (
    AssistantMessageItem,
    AzureSemanticVad,
    AzureStandardVoice,
    InputAudioFormat,
    InputTextContentPart,
    Modality,
    OutputAudioFormat,
    OutputTextContentPart,
    RequestSession,
    ResponseCreateParams,
    ServerEvent,
    ServerEventError,
    ServerEventSessionCreated,
    ServerEventSessionUpdated,
    SystemMessageItem,
)
from azure.core.credentials import AzureKeyCredential

from callbot.local.voicelive.server import ServerSession, VoiceLiveServer
from tests.harness import StaticToken

KEY = "local-test-key"
PCM24_BYTES_PER_MS = 48


@pytest.fixture
async def server() -> AsyncIterator[VoiceLiveServer]:
    async with VoiceLiveServer(api_key=KEY, accept_bearer=True) as srv:
        yield srv


async def recv_until(conn: VoiceLiveConnection, type_: str) -> list[ServerEvent]:
    """Events up to and including the first of ``type_`` (5 s at most)."""
    events: list[ServerEvent] = []
    async with asyncio.timeout(5.0):
        while True:
            events.append(await conn.recv())
            if events[-1].type == type_:
                return events


async def opened(server: VoiceLiveServer, conn: VoiceLiveConnection, index: int = 0) -> ServerSession:
    first = await conn.recv()
    assert isinstance(first, ServerEventSessionCreated)
    session = await server.wait_for_session(index)
    assert first.session.id == session.id
    return session


async def test_api_key_is_accepted_and_session_created_comes_first(server: VoiceLiveServer) -> None:
    async with connect(endpoint=server.url, credential=AzureKeyCredential(KEY), model="gpt-realtime") as conn:
        session = await opened(server, conn)
    assert session.query["model"] == "gpt-realtime"
    assert "api-version" in session.query
    assert session.headers["api-key"] == KEY
    await asyncio.wait_for(session.closed.wait(), 5)


async def test_wrong_api_key_is_refused_with_401_before_upgrade(server: VoiceLiveServer) -> None:
    with pytest.raises(VoiceLiveConnectionError, match="401"):
        async with connect(endpoint=server.url, credential=AzureKeyCredential("wrong"), model="m"):
            pass
    assert server.sessions == []


async def test_bearer_token_is_accepted_only_when_enabled() -> None:
    async with VoiceLiveServer(api_key=KEY, accept_bearer=True) as srv:
        async with connect(endpoint=srv.url, credential=StaticToken(), model="m") as conn:
            session = await opened(srv, conn)
        assert session.headers["Authorization"] == "Bearer entra-token"
    async with VoiceLiveServer(api_key=KEY) as srv:
        with pytest.raises(VoiceLiveConnectionError, match="401"):
            async with connect(endpoint=srv.url, credential=StaticToken(), model="m"):
                pass


async def test_agent_mode_connects_without_model_and_reports_the_agent(server: VoiceLiveServer) -> None:
    cred = AzureKeyCredential(KEY)
    async with connect(endpoint=server.url, credential=cred, agent_name="concierge", project_name="proj") as conn:
        created = await conn.recv()
        assert isinstance(created, ServerEventSessionCreated)
        assert created.session.agent is not None and created.session.agent.name == "concierge"
    session = server.sessions[0]
    assert session.query["agent-name"] == "concierge" and session.query["agent-project-name"] == "proj"


async def test_session_update_is_echoed_merged_as_typed_session_updated(server: VoiceLiveServer) -> None:
    update = RequestSession(
        modalities=[Modality.TEXT, Modality.AUDIO],
        instructions="Be brief.",
        voice=AzureStandardVoice(name="en-US-Ava:DragonHDLatestNeural"),
        input_audio_format=InputAudioFormat.PCM16,
        input_audio_sampling_rate=16000,
        output_audio_format=OutputAudioFormat.PCM16_16000_HZ,
        turn_detection=AzureSemanticVad(threshold=0.4, interrupt_response=True),
    )
    async with connect(endpoint=server.url, credential=AzureKeyCredential(KEY), model="gpt-realtime") as conn:
        session = await opened(server, conn)
        await conn.session.update(session=update)
        updated = (await recv_until(conn, "session.updated"))[-1]
    assert isinstance(updated, ServerEventSessionUpdated)
    assert updated.session.id == session.id and updated.session.model == "gpt-realtime"
    assert updated.session.instructions == "Be brief."
    # the SDK leaves the voice union undeserialised: a plain dict
    assert updated.session.voice["name"] == "en-US-Ava:DragonHDLatestNeural"  # type: ignore[index]
    assert updated.session.turn_detection.type == "azure_semantic_vad"  # type: ignore[union-attr]
    assert updated.session.output_audio_format == "pcm16_16000hz"
    assert updated.session.temperature == 0.8  # a default kept by the merge
    assert session.config["input_audio_sampling_rate"] == 16000


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("input_audio_format", "mp3", "session.input_audio_format"),
        ("turn_detection", {"type": "magic_vad"}, "session.turn_detection.type"),
        ("input_audio_sampling_rate", 44100, "session.input_audio_sampling_rate"),
        ("output_audio_format", "opus", "session.output_audio_format"),
    ],
)
async def test_invalid_session_config_is_refused_naming_the_parameter(
    server: VoiceLiveServer, field: str, value: Any, param: str
) -> None:
    async with connect(endpoint=server.url, credential=AzureKeyCredential(KEY), model="m") as conn:
        session = await opened(server, conn)
        before = dict(session.config)
        await conn.send({"type": "session.update", "event_id": "evt_cfg", "session": {field: value}})
        error = (await recv_until(conn, "error"))[-1]
    assert isinstance(error, ServerEventError)
    assert (error.error.code, error.error.param, error.error.event_id) == ("invalid_value", param, "evt_cfg")
    assert session.config == before


async def test_appended_audio_arrives_byte_exact(server: VoiceLiveServer) -> None:
    chunks = [os.urandom(960) for _ in range(5)]
    async with connect(endpoint=server.url, credential=AzureKeyCredential(KEY), model="m") as conn:
        session = await opened(server, conn)
        for chunk in chunks:
            await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
        await session.wait_for("input_audio_buffer.append", count=5)
    assert bytes(session.input_audio) == b"".join(chunks)
    assert session.input_audio_bytes == 4800 and session.input_ms == 100.0


async def test_bad_base64_audio_is_refused(server: VoiceLiveServer) -> None:
    async with connect(endpoint=server.url, credential=AzureKeyCredential(KEY), model="m") as conn:
        session = await opened(server, conn)
        await conn.input_audio_buffer.append(audio="not base64!!")
        error = (await recv_until(conn, "error"))[-1]
    assert isinstance(error, ServerEventError) and error.error.param == "audio"
    assert session.input_audio_bytes == 0


async def test_unknown_event_and_malformed_json_are_errors(server: VoiceLiveServer) -> None:
    async with connect(endpoint=server.url, credential=AzureKeyCredential(KEY), model="m") as conn:
        await opened(server, conn)
        await conn.send({"type": "conversation.teleport", "event_id": "evt_x"})
        error = (await recv_until(conn, "error"))[-1]
        assert isinstance(error, ServerEventError)
        assert (error.error.type, error.error.code, error.error.event_id) == (
            "invalid_request_error", "unknown_event", "evt_x",
        )  # fmt: skip
    url = f"{server.url}/voice-live/realtime?api-version=x&model=m"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers={"api-key": KEY}) as ws:
        await ws.receive_json()  # session.created
        await ws.send_str("{not json")
        assert (await ws.receive_json())["error"]["code"] == "invalid_json"


async def test_scripted_response_deltas_decode_to_the_exact_bytes(server: VoiceLiveServer) -> None:
    audio = os.urandom(1234 * PCM24_BYTES_PER_MS)
    text = "Hello caller, how can I help you today?"
    async with connect(endpoint=server.url, credential=AzureKeyCredential(KEY), model="m") as conn:
        session = await opened(server, conn)
        handle = await session.start_response(text=text, audio=audio, chunk_ms=100, items=2)
        events = await recv_until(conn, "response.done")
    types = [e.type for e in events]
    assert types[:3] == ["response.created", "response.output_item.added", "conversation.item.created"]
    assert types.count("response.output_item.done") == 2 and types.count("response.audio.done") == 2
    received = b"".join(e.delta for e in events if e.type == "response.audio.delta")  # type: ignore[attr-defined]
    assert received == audio
    deltas = [e for e in events if e.type == "response.audio_transcript.delta"]
    assert (
        " ".join(
            "".join(d.delta for d in deltas if d.item_id == item_id)  # type: ignore[attr-defined]
            for item_id in handle.item_ids
        )
        == text
    )
    done = events[-1]
    assert done.response.status == "completed" and done.response.id == handle.response_id  # type: ignore[attr-defined]
    assert [item.id for item in done.response.output] == handle.item_ids  # type: ignore[attr-defined]
    assert sum(handle.audio_ms_sent_per_item.values()) == pytest.approx(1234)
    assert await handle
    assert not handle.cancelled and session.active_response is None


async def test_cancel_stops_deltas_and_reports_cancelled(server: VoiceLiveServer) -> None:
    audio = bytes(5000 * PCM24_BYTES_PER_MS)
    async with connect(endpoint=server.url, credential=AzureKeyCredential(KEY), model="m") as conn:
        session = await opened(server, conn)
        handle = await session.start_response(text="A long answer", audio=audio, realtime_factor=1.0)
        await recv_until(conn, "response.audio.delta")
        await conn.response.cancel()
        events = await recv_until(conn, "response.done")
        with pytest.raises(TimeoutError):  # nothing after response.done
            await asyncio.wait_for(conn.recv(), 0.3)
    done = events[-1]
    assert done.response.status == "cancelled"  # type: ignore[attr-defined]
    assert done.response.status_details.reason == "client_cancelled"  # type: ignore[attr-defined]
    assert handle.cancelled and handle.audio_ms_sent_per_item[handle.item_ids[0]] < 2000
    sent_types = [e["type"] for e in session.sent]
    assert "response.audio.delta" not in sent_types[sent_types.index("response.done") :]


async def test_cancel_without_active_response_is_an_error(server: VoiceLiveServer) -> None:
    async with connect(endpoint=server.url, credential=AzureKeyCredential(KEY), model="m") as conn:
        await opened(server, conn)
        await conn.response.cancel()
        error = (await recv_until(conn, "error"))[-1]
    assert error.error.code == "response_cancel_not_active"  # type: ignore[attr-defined]


async def test_truncate_past_the_audio_sent_is_refused_like_the_service(server: VoiceLiveServer) -> None:
    async with connect(endpoint=server.url, credential=AzureKeyCredential(KEY), model="m") as conn:
        session = await opened(server, conn)
        handle = await session.start_response(text="Hi", audio=bytes(1234 * PCM24_BYTES_PER_MS))
        await recv_until(conn, "response.done")
        item_id = handle.item_ids[0]
        await conn.conversation.item.truncate(item_id=item_id, audio_end_ms=5000, content_index=0, event_id="evt_t")
        error = (await recv_until(conn, "error"))[-1]
        assert isinstance(error, ServerEventError)
        assert error.error.message == "Audio content of 1234ms is already shorter than 5000ms"
        assert (error.error.code, error.error.event_id) == ("invalid_value", "evt_t")

        await conn.conversation.item.truncate(item_id=item_id, audio_end_ms=600, content_index=0)
        truncated = (await recv_until(conn, "conversation.item.truncated"))[-1]
        assert truncated.item_id == item_id and truncated.audio_end_ms == 600  # type: ignore[attr-defined]
        await conn.conversation.item.truncate(item_id=item_id, audio_end_ms=601, content_index=0)
        again = (await recv_until(conn, "error"))[-1]
    assert again.error.message == "Audio content of 600ms is already shorter than 601ms"  # type: ignore[attr-defined]
    assert session.conversation.truncations == {item_id: 600}


async def test_default_behaviour_speaks_the_pre_generated_message(server: VoiceLiveServer) -> None:
    greeting = AssistantMessageItem(content=[OutputTextContentPart(text="Hello!")])
    async with connect(endpoint=server.url, credential=AzureKeyCredential(KEY), model="m") as conn:
        await opened(server, conn)
        await conn.response.create(response=ResponseCreateParams(pre_generated_assistant_message=greeting))
        events = await recv_until(conn, "response.done")
        await conn.response.create()
        plain = await recv_until(conn, "response.done")
    audio = b"".join(e.delta for e in events if e.type == "response.audio.delta")  # type: ignore[attr-defined]
    assert len(audio) == 6 * 60 * PCM24_BYTES_PER_MS
    assert [e.transcript for e in events if e.type == "response.audio_transcript.done"] == ["Hello!"]  # type: ignore[attr-defined]
    assert [e.transcript for e in plain if e.type == "response.audio_transcript.done"] == ["OK"]  # type: ignore[attr-defined]


async def test_second_response_create_while_one_is_active_is_refused(server: VoiceLiveServer) -> None:
    async with connect(endpoint=server.url, credential=AzureKeyCredential(KEY), model="m") as conn:
        session = await opened(server, conn)
        await session.start_response(text="x", audio=bytes(3000 * PCM24_BYTES_PER_MS), realtime_factor=1.0)
        await conn.response.create()
        error = (await recv_until(conn, "error"))[-1]
    assert error.error.code == "conversation_already_has_active_response"  # type: ignore[attr-defined]


@pytest.mark.parametrize("interrupt", [True, False])
async def test_speech_started_interrupts_the_response_when_turn_detection_says_so(
    server: VoiceLiveServer, interrupt: bool
) -> None:
    async with connect(endpoint=server.url, credential=AzureKeyCredential(KEY), model="m") as conn:
        session = await opened(server, conn)
        await conn.session.update(session={"turn_detection": {"type": "server_vad", "interrupt_response": interrupt}})
        await recv_until(conn, "session.updated")
        handle = await session.start_response(text="Long", audio=bytes(800 * PCM24_BYTES_PER_MS), realtime_factor=1.0)
        await recv_until(conn, "response.audio.delta")
        await session.speech_started()
        events = await recv_until(conn, "response.done")
    types = [e.type for e in events]
    assert "input_audio_buffer.speech_started" in types
    assert handle.cancelled is interrupt
    if interrupt:
        assert events[-1].response.status_details.reason == "turn_detected"  # type: ignore[attr-defined]


async def test_speech_turn_commit_and_transcription_build_the_conversation(server: VoiceLiveServer) -> None:
    async with connect(endpoint=server.url, credential=AzureKeyCredential(KEY), model="m") as conn:
        session = await opened(server, conn)
        await conn.conversation.item.create(item=SystemMessageItem(content=[InputTextContentPart(text="ctx")]))
        created = (await recv_until(conn, "conversation.item.created"))[-1]
        await conn.input_audio_buffer.append(audio=base64.b64encode(bytes(4800)).decode())
        await session.wait_for("input_audio_buffer.append")
        item_id = await session.speech_started()
        await session.speech_stopped()
        await session.transcription_completed(item_id, "book a table")
        events = await recv_until(conn, "conversation.item.input_audio_transcription.completed")
        await conn.input_audio_buffer.commit()
        empty = (await recv_until(conn, "error"))[-1]
    stopped = next(e for e in events if e.type == "input_audio_buffer.speech_stopped")
    assert stopped.audio_end_ms == 100 and stopped.item_id == item_id  # type: ignore[attr-defined]
    committed = next(e for e in events if e.type == "input_audio_buffer.committed")
    assert committed.previous_item_id == created.item.id  # type: ignore[attr-defined]
    assert list(session.conversation.items) == [created.item.id, item_id]  # type: ignore[attr-defined]
    assert session.conversation.items[item_id]["content"][0]["transcript"] == "book a table"
    assert empty.error.code == "input_audio_buffer_commit_empty"  # type: ignore[attr-defined]


async def test_abort_ends_the_sdk_iteration_silently(server: VoiceLiveServer) -> None:
    seen: list[str] = []
    async with connect(endpoint=server.url, credential=AzureKeyCredential(KEY), model="m") as conn:

        async def consume() -> None:
            async for event in conn:
                seen.append(event.type)

        consumer = asyncio.create_task(consume())
        session = await server.wait_for_session()
        await session.send({"type": "input_audio_buffer.cleared"})
        await asyncio.sleep(0.1)
        await session.abort()
        await asyncio.wait_for(consumer, 5)  # ends without raising
        await asyncio.wait_for(session.closed.wait(), 5)
    assert seen == ["session.created", "input_audio_buffer.cleared"]


async def test_graceful_close_ends_the_sdk_iteration_too(server: VoiceLiveServer) -> None:
    async with connect(endpoint=server.url, credential=AzureKeyCredential(KEY), model="m") as conn:
        session = await opened(server, conn)
        consumer = asyncio.create_task(asyncio.wait_for(_drain(conn), 5))
        await session.close(1000)
        await consumer
    assert session.closed.is_set()


async def _drain(conn: VoiceLiveConnection) -> None:
    async for _ in conn:
        pass


async def test_concurrent_sessions_are_independent(server: VoiceLiveServer) -> None:
    cred = AzureKeyCredential(KEY)
    async with (
        connect(endpoint=server.url, credential=cred, model="a") as first,
        connect(endpoint=server.url, credential=cred, model="b") as second,
    ):
        await first.recv()
        await second.recv()
        await first.input_audio_buffer.append(audio=base64.b64encode(b"\x01\x00").decode())
        await second.input_audio_buffer.append(audio=base64.b64encode(b"\x02\x00\x03\x00").decode())
        by_model = {s.query["model"]: s for s in [await server.wait_for_session(i) for i in range(2)]}
        await by_model["a"].wait_for("input_audio_buffer.append")
        await by_model["b"].wait_for("input_audio_buffer.append")
    assert by_model["a"].id != by_model["b"].id
    assert bytes(by_model["a"].input_audio) == b"\x01\x00"
    assert bytes(by_model["b"].input_audio) == b"\x02\x00\x03\x00"


class EchoBehaviour:
    """Plays back what the caller said: shows the plug point a real offline model uses."""

    def __init__(self, session: ServerSession) -> None:
        self.session = session
        self.heard = bytearray()
        self.seen: list[str] = []

    async def on_event(self, event: dict[str, Any]) -> None:
        self.seen.append(event["type"])
        if event["type"] == "input_audio_buffer.append":
            self.heard += self.session.last_appended

    async def on_response_create(self, event: dict[str, Any]) -> None:
        await self.session.start_response(text="echo", audio=bytes(self.heard))


async def test_behaviour_hook_plays_the_model_without_history_kept() -> None:
    behaviours: list[EchoBehaviour] = []

    def factory(session: ServerSession) -> EchoBehaviour:
        behaviours.append(EchoBehaviour(session))
        return behaviours[-1]

    said = os.urandom(480 * PCM24_BYTES_PER_MS)
    async with VoiceLiveServer(behaviour_factory=factory, keep_history=False) as srv:
        async with connect(endpoint=srv.url, credential=AzureKeyCredential("any"), model="m") as conn:
            session = await opened(srv, conn)
            for start in range(0, len(said), 4800):
                await conn.input_audio_buffer.append(audio=base64.b64encode(said[start : start + 4800]).decode())
            await conn.response.create()
            events = await recv_until(conn, "response.done")
        await asyncio.wait_for(session.closed.wait(), 5)
        assert srv.sessions == []
    assert b"".join(e.delta for e in events if e.type == "response.audio.delta") == said  # type: ignore[attr-defined]
    assert behaviours[0].seen[-1] == "response.create" and behaviours[0].seen.count("input_audio_buffer.append") == 5
    assert session.input_audio_bytes == len(said) and session.input_audio == bytearray() and session.received == []
