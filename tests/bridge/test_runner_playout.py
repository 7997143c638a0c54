"""The runner's playout towards ACS: a barge-in while a send to ACS is blocked drops the frames released before it
and sends StopAudio next."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from callbot.bridge.pacer import Pacer
from callbot.bridge.runner import CallBridge
from callbot.config import Settings
from tests.bridge.test_runner import until


class Model:
    """A Voice Live session whose server events the test pushes."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []

    async def recv_bytes(self) -> bytes:
        return orjson.dumps(await self.events.get())

    async def send(self, event: dict[str, Any]) -> None:
        self.sent.append(event)

    async def close(self) -> None:
        pass


class Connector:
    def __init__(self, model: Model) -> None:
        self.model = model

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Model]:
        yield self.model


class BlockingAcs:
    """An ACS media socket whose sends block while `gate` is closed (a congested network path)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sent: list[dict[str, Any]] = []
        self.sending = 0

    async def receive(self) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send_text(self, text: str) -> None:
        self.sending += 1
        await self.gate.wait()
        self.sent.append(orjson.loads(text))


async def test_a_barge_in_while_a_send_to_acs_is_blocked_drops_the_frames_released_before_it() -> None:
    model = Model()
    settings = Settings(_env_file=None, azure_voicelive_endpoint="http://127.0.0.1:9",  # type: ignore[call-arg]
                        azure_voicelive_api_key="k" * 32, callbot_greeting="", callbot_playback_lead_ms=200)
    bridge = CallBridge("c1", settings, Connector(model))  # type: ignore[arg-type]
    run = asyncio.create_task(bridge.run())
    acs = BlockingAcs()
    try:
        await model.events.put({"type": "session.updated", "session": {}})
        await until(lambda: bridge.core.ready)
        bridge.attach(acs)  # type: ignore[arg-type]
        for event in (
            {"type": "response.created", "response": {"id": "r1"}},
            {"type": "response.output_item.added", "response_id": "r1", "item": {"id": "i1"}},
            {"type": "response.audio.delta", "response_id": "r1", "item_id": "i1", "content_index": 0,
             "delta": base64.b64encode(b"\x01\x02" * 24000).decode()},  # 1 s of audio: 10 frames fit the lead
        ):
            await model.events.put(event)
        await until(lambda: acs.sending == 1)  # the playout is stuck in its first send, more frames released
        await model.events.put({"type": "input_audio_buffer.speech_started"})
        await until(lambda: any(e["type"] == "conversation.item.truncate" for e in model.sent))
        acs.gate.set()
        await until(lambda: len(acs.sent) >= 2)
        await asyncio.sleep(0.3)
        kinds = [m["kind"] for m in acs.sent]
        assert kinds == ["AudioData", "StopAudio"], "nothing released before the barge-in follows the blocked frame"
    finally:
        acs.gate.set()
        bridge.stop("test over")
        assert await asyncio.wait_for(run, 5) == "test over"


class Acs:
    """An ACS media socket that takes every send at once."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send_text(self, text: str) -> None:
        self.sent.append(orjson.loads(text))


def answer(seconds: float) -> list[dict[str, Any]]:
    return [
        {"type": "response.created", "response": {"id": "r1"}},
        {"type": "response.output_item.added", "response_id": "r1", "item": {"id": "i1"}},
        {"type": "response.audio.delta", "response_id": "r1", "item_id": "i1", "content_index": 0,
         "delta": base64.b64encode(b"\x01\x02" * int(24000 * seconds)).decode()},
        {"type": "response.audio.done", "response_id": "r1", "item_id": "i1", "content_index": 0},
        {"type": "response.done", "response": {"id": "r1", "status": "completed"}},
    ]


@contextlib.asynccontextmanager
async def calls(count: int, pacer: Pacer, **env: Any) -> AsyncIterator[list[tuple[CallBridge, Model]]]:
    settings = Settings(_env_file=None, azure_voicelive_endpoint="http://127.0.0.1:9",  # type: ignore[call-arg]
                        azure_voicelive_api_key="k" * 32, callbot_greeting="", **env)
    pairs = []
    for i in range(count):
        model = Model()
        pairs.append((CallBridge(f"c{i}", settings, Connector(model), pacer=pacer), model))  # type: ignore[arg-type]
    runs = [asyncio.create_task(bridge.run()) for bridge, _ in pairs]
    try:
        for bridge, model in pairs:
            await model.events.put({"type": "session.updated", "session": {}})
            await until(lambda b=bridge: b.core.ready)  # type: ignore[misc]
        yield pairs
    finally:
        for bridge, _ in pairs:
            bridge.stop("test over")
        assert await asyncio.wait_for(asyncio.gather(*runs), 5) == ["test over"] * count


async def test_one_timer_paces_every_calls_audio_in_far_fewer_wake_ups_than_chunks() -> None:
    pacer = Pacer()
    async with calls(20, pacer) as pairs:
        sockets = []
        for bridge, model in pairs:
            acs = Acs()
            sockets.append(acs)
            bridge.attach(acs)  # type: ignore[arg-type]
            for event in answer(0.6):
                await model.events.put(event)
            await asyncio.sleep(0.001)  # the calls' chunks fall due at different moments
        await until(lambda: all(sum(m["kind"] == "AudioData" for m in acs.sent) == 30 for acs in sockets))
        chunks = 20 * 30
        assert 10 < pacer.fires < chunks / 4, f"{pacer.fires} timer firings for {chunks} chunks of 20 calls"
        for acs in sockets:
            audio = b"".join(base64.b64decode(m["audioData"]["data"]) for m in acs.sent if m["kind"] == "AudioData")
            assert audio == b"\x01\x02" * 14400, "every call got its answer whole and in order"
    assert len(pacer) == 0 or all(entry[2].due_at != entry[0] for entry in pacer._heap), "ended calls left nothing"


async def test_a_stalled_caller_socket_delays_only_its_own_call_on_the_shared_clock() -> None:
    pacer = Pacer()
    async with calls(2, pacer, callbot_playback_lead_ms=200) as [(stuck, stuck_model), (fine, fine_model)]:
        blocked, acs = BlockingAcs(), Acs()
        stuck.attach(blocked)  # type: ignore[arg-type]
        fine.attach(acs)  # type: ignore[arg-type]
        for event in answer(1.0):
            await stuck_model.events.put(event)
            await fine_model.events.put(event)
        await until(lambda: sum(m["kind"] == "AudioData" for m in acs.sent) == 50, timeout=5)
        assert blocked.sending == 1 and not blocked.sent, "the stalled call is still in its first send"
        await stuck_model.events.put({"type": "input_audio_buffer.speech_started"})  # a barge-in on the stuck call
        await until(lambda: any(e["type"] == "conversation.item.truncate" for e in stuck_model.sent))
        blocked.gate.set()
        await until(lambda: [m["kind"] for m in blocked.sent][-1:] == ["StopAudio"])
        assert [m["kind"] for m in blocked.sent] == ["AudioData", "StopAudio"]
