"""Regenerates the recorded calls in this directory (`tests/test_replay.py` replays them).

Run from the repository root::

    /tmp/venv/bin/python -m tests.recordings.make_recordings            # all scenarios, into tests/recordings/
    /tmp/venv/bin/python -m tests.recordings.make_recordings barge_in   # one scenario
    /tmp/venv/bin/python -m tests.recordings.make_recordings --out /tmp/rec

Each scenario is a real call through the real bridge runner (`CallBridge` under uvicorn, a real ACS-style media
WebSocket client, the real `azure-ai-voicelive` SDK against the local Voice Live server playing the model), recorded
by `CallRecorder` at the wire boundaries exactly as in production. Only the media bridge runs here (no Event Grid /
callbacks / REST: replay does not use them), so the files do not depend on the call-control wiring.

- ``qa``: the caller asks (0.6 s), the model answers (1 s of audio), the answer plays out, the caller hangs up.
- ``barge_in``: the caller speaks 0.6 s into a 1.5 s answer: StopAudio, response.cancel, truncate; then asks again.
- ``hangup_mid_answer``: the caller hangs up 0.5 s into a 1.5 s answer.
- ``tool_call``: the caller asks about an order; the model says a few words and calls ``order_status``; the tool's
  output goes back with one ``response.create`` and the model's answer plays.
- ``transfer``: the caller asks for a person; the model calls ``transfer_to_human``; the handover line plays, then
  the transfer is requested and accepted (here the rig answers for ACS), and the bridge leaves the call up.
- ``voicelive_error``: mid-answer Voice Live sends a server error and drops the connection; the received audio
  keeps playing, the bridge reconnects and restores the conversation, the caller asks again and hears the answer.

To keep the files small (< 300 KB) the media format is pcm16k and the caller only sends audio while speaking (ACS
itself streams continuously; the bridge does not depend on it). Audio is a tone (`local.voicelive.protocol.tone`):
the WAV export (`callbot export-wav tests/recordings/barge_in.jsonl /tmp/b.wav`) lets you hear where the bot was cut.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from callbot.bridge.runner import CallBridge
from callbot.bridge.tools import ToolHost, ToolResult
from callbot.bridge.wire import WireTap
from callbot.config import Settings
from callbot.local.acs.network import audio_message
from callbot.local.voicelive.protocol import tone
from callbot.local.voicelive.server import ServerSession, VoiceLiveServer
from callbot.local.voicelive.tools import FunctionCall
from callbot.recording import CallRecorder
from callbot.voicelive.connection import VoiceLiveConnector

HERE = Path(__file__).parent
KEY = "recording-voicelive-key-0123456789"
RATE = 16000
BOT_FORMAT = "pcm16_16000hz"


def caller_speech(ms: int) -> bytes:
    return tone(ms, BOT_FORMAT, frequency=220.0)


def bot_speech(ms: int) -> bytes:
    return tone(ms, BOT_FORMAT, frequency=660.0)


@dataclass
class MediaClient:
    """The ACS side of the media WebSocket: streams caller frames, collects what callbot sends."""

    ws: aiohttp.ClientWebSocketResponse
    received: list[tuple[float, str]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.received.append((time.monotonic(), str(orjson.loads(msg.data).get("kind"))))
                self.changed.set()
        self.changed.set()

    def count(self, kind: str) -> int:
        return sum(1 for _, k in self.received if k == kind)

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while self.count(kind) < count:
                self.changed.clear()
                await self.changed.wait()

    async def stream(self, pcm: bytes) -> None:
        """20 ms frames at real time, like ACS."""
        size = RATE * 2 // 50
        start = time.monotonic()
        for i, offset in enumerate(range(0, len(pcm), size)):
            frame = pcm[offset:offset + size].ljust(size, b"\0")
            await asyncio.sleep(max(0.0, start + i * 0.02 - time.monotonic()))
            await self.ws.send_str(audio_message(frame))

    async def hang_up(self) -> None:
        await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


class OrderTools:
    """The operator's tools of the ``tool_call`` scenario: one deterministic tool (the HTTP runner behind the real
    service is tested in tests/tools; a recording only needs the output the bridge got)."""

    def definitions(self) -> list[dict[str, Any]]:
        return [{"type": "function", "name": "order_status", "description": "Look up an order.",
                 "parameters": {"type": "object", "properties": {"order": {"type": "string"}}}}]

    def approves(self, server_label: str, tool_name: str) -> bool:
        return False

    def has(self, name: str) -> bool:
        return name == "order_status"

    async def call(self, name: str, arguments: str) -> ToolResult:
        await asyncio.sleep(0.2)
        return ToolResult('{"status": "shipped", "eta": "tomorrow"}', "ok", 0.2)


@dataclass
class Rig:
    voicelive: VoiceLiveServer
    url: str
    directory: Path
    done: asyncio.Event = field(default_factory=asyncio.Event)
    paths: list[Path] = field(default_factory=list)  # the recordings written, in call order
    bridges: list[CallBridge] = field(default_factory=list)
    transfers: list[str] = field(default_factory=list)  # reasons given to the rig's stand-in for ACS

    @asynccontextmanager
    async def call(self) -> AsyncIterator[MediaClient]:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(self.url)
            client = MediaClient(ws)
            client.reader = asyncio.create_task(client.read())
            await ws.send_str(orjson.dumps({"kind": "AudioMetadata", "audioMetadata": {
                "subscriptionId": "recording", "encoding": "PCM", "sampleRate": RATE, "channels": 1,
                "length": RATE * 2 // 50}}).decode())
            try:
                yield client
            finally:
                await client.hang_up()
                async with asyncio.timeout(10):
                    await self.done.wait()


@asynccontextmanager
async def rig(directory: Path, *, tools: ToolHost | None = None, transfer: bool = False,
              **overrides: Any) -> AsyncIterator[Rig]:
    """A Voice Live server plus a media endpoint running `CallBridge` with a `CallRecorder` writing to `directory`."""
    async with VoiceLiveServer(api_key=KEY) as voicelive:
        values: dict[str, Any] = {"azure_voicelive_endpoint": voicelive.url, "azure_voicelive_api_key": KEY,
                                  "callbot_greeting": "", "callbot_media_format": "pcm16k",
                                  "callbot_instructions": "You answer questions about a small shop, briefly."}
        values.update(overrides)
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        connector = VoiceLiveConnector(settings)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        the_rig = Rig(voicelive, f"ws://127.0.0.1:{sock.getsockname()[1]}/media", directory)

        async def media(ws: WebSocket) -> None:
            await ws.accept()
            loop = asyncio.get_running_loop()
            call_id = f"rec{len(voicelive.sessions):02d}{int(time.time() * 1000) % 100000:05d}"
            recorder = CallRecorder.open(directory, call_id, settings, clock=loop.time)
            if recorder is not None:
                the_rig.paths.append(recorder.path)
            tap: WireTap | None = recorder

            async def transfer_at_acs(reason: str) -> None:  # ACS accepts, a moment later
                the_rig.transfers.append(reason)
                asyncio.get_running_loop().call_later(0.3, bridge.transfer_outcome, True, "")

            bridge = CallBridge(call_id, settings, connector, tap=tap, tools=tools,
                                on_transfer=transfer_at_acs if transfer else None)
            the_rig.bridges.append(bridge)
            bridge.attach(ws)
            reason = "error"
            try:
                reason = await bridge.run()
            finally:
                try:
                    if recorder is not None:
                        await recorder.close(reason)
                    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                        await ws.close()
                finally:
                    the_rig.done.set()

        server = uvicorn.Server(uvicorn.Config(Starlette(routes=[WebSocketRoute("/media", media)]), log_config=None,
                                               lifespan="off"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
            yield the_rig
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 15)
            sock.close()
            await connector.close()


async def _caller_turn(session: ServerSession, client: MediaClient, ms: int, transcript: str) -> None:
    item = await session.speech_started(audio_start_ms=int(session.input_ms))
    await client.stream(caller_speech(ms))
    await asyncio.sleep(0.1)
    await session.speech_stopped(item_id=item)
    await session.transcription_completed(item, transcript)


async def qa(r: Rig) -> None:
    async with r.call() as client:
        session = await r.voicelive.wait_for_session()
        await session.wait_for("session.update")
        await _caller_turn(session, client, 600, "What are your opening hours?")
        handle = await session.start_response(text="We are open from nine to five.", audio=bot_speech(1000))
        await handle.wait()
        await client.wait_for("AudioData", 50)
        await asyncio.sleep(0.2)


async def barge_in(r: Rig) -> None:
    async with r.call() as client:
        session = await r.voicelive.wait_for_session()
        await session.wait_for("session.update")
        await _caller_turn(session, client, 300, "Tell me about your prices.")
        # streamed at twice real time, like the service: the response is still active when the caller cuts in
        await session.start_response(text="Our prices start at ten euros and go up to", audio=bot_speech(2000),
                                     realtime_factor=0.5)
        await client.wait_for("AudioData")
        await asyncio.sleep(0.5)
        await _caller_turn(session, client, 300, "Sorry, do you deliver?")
        await session.wait_for("conversation.item.truncate")
        await client.wait_for("StopAudio")
        handle = await session.start_response(text="Yes, we do.", audio=bot_speech(500))
        await handle.wait()
        await client.wait_for("AudioData", 25 + 1)
        await asyncio.sleep(0.7)


async def hangup_mid_answer(r: Rig) -> None:
    async with r.call() as client:
        session = await r.voicelive.wait_for_session()
        await session.wait_for("session.update")
        await _caller_turn(session, client, 300, "What do you sell?")
        await session.start_response(text="We sell bicycles, scooters and spare parts.", audio=bot_speech(1500))
        await client.wait_for("AudioData")
        await asyncio.sleep(0.5)
    await asyncio.wait_for(session.closed.wait(), 5)


async def voicelive_error(r: Rig) -> None:
    async with r.call() as client:
        session = await r.voicelive.wait_for_session()
        await session.wait_for("session.update")
        await _caller_turn(session, client, 300, "Where are you located?")
        await session.start_response(text="We are on the main square.", audio=bot_speech(1200))
        await client.wait_for("AudioData")
        await asyncio.sleep(0.3)
        await session.error("server_error", "The server had an error while processing your request.",
                            type="server_error")
        await session.abort()
        again = await r.voicelive.wait_for_session(1)
        await again.wait_for("session.update")
        await again.wait_for("conversation.item.create", count=2)  # the restored turns
        await client.wait_for("AudioData", 60)  # the answer received before the drop plays to its end
        await _caller_turn(again, client, 300, "Are you open on Sundays?")
        handle = await again.start_response(text="No.", audio=bot_speech(400))
        await handle.wait()
        await client.wait_for("AudioData", 60 + 20)
        await asyncio.sleep(0.2)


async def tool_call(r: Rig) -> None:
    async with r.call() as client:
        session = await r.voicelive.wait_for_session()
        await session.wait_for("session.update")
        await _caller_turn(session, client, 400, "Where is my order four two?")
        handle = await session.start_response(text="Let me check.", audio=bot_speech(500),
                                              calls=(FunctionCall("order_status", '{"order": "42"}'),))
        await handle.wait()
        await session.wait_for("response.create", timeout=10)  # after the tool's output: the server answers it
        await session.responses[-1].wait()
        await client.wait_for("AudioData", 25 + 1)
        await asyncio.sleep(0.2)


async def transfer(r: Rig) -> None:
    async with r.call() as client:
        session = await r.voicelive.wait_for_session()
        await session.wait_for("session.update")
        await _caller_turn(session, client, 400, "Can I speak to a person?")
        handle = await session.start_response(  # a call only: callbot's handover line is the bot's words
            audio=b"", items=0,
            calls=(FunctionCall("transfer_to_human", '{"reason": "the caller asked for a person"}'),))
        await handle.wait()
        await session.wait_for("response.create", timeout=10)  # the handover line, said by the server
        async with asyncio.timeout(10):
            await r.done.wait()  # transferred: the bridge leaves, the call stays up


SCENARIOS: dict[str, Callable[[Rig], Awaitable[None]]] = {
    "qa": qa, "barge_in": barge_in, "hangup_mid_answer": hangup_mid_answer, "voicelive_error": voicelive_error,
    "tool_call": tool_call, "transfer": transfer,
}
RIG_OPTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "tool_call": lambda: {"tools": OrderTools()},
    "transfer": lambda: {"transfer": True, "callbot_transfer_message": "One moment."},
}


async def record(name: str, directory: Path, **overrides: Any) -> Path:
    """Run one scenario; returns the recording's path (named after the call in `directory`)."""
    async with rig(directory, **{**RIG_OPTIONS.get(name, dict)(), **overrides}) as r:
        await SCENARIOS[name](r)
        await r.done.wait()
    (path,) = r.paths
    return path


async def main(names: list[str], out: Path) -> None:
    import tempfile

    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            path = await record(name, Path(tmp))
            target = out / f"{name}.jsonl"
            target.write_bytes(path.read_bytes())
        sys.stdout.write(f"{target}: {target.stat().st_size // 1024} KB\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("scenario", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    unknown = set(args.scenario) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    asyncio.run(main(args.scenario or list(SCENARIOS), args.out))
