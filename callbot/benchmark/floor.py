"""The floor of callbot's stack: what moving one call's messages costs with no bridge logic at all.

`callbot bench --floor --calls N --seconds S` runs, in separate processes, a relay on callbot's own server stack
(uvicorn with the settings `callbot serve` uses, Starlette, the websockets protocol, uvloop; aiohttp as the Voice Live
SDK's client), a sink standing in for Voice Live, and a load generator standing in for ACS. Each relayed "call" moves
the message mix of a `callbot bench` call: 50 caller messages a second in (1.3 KB, forwarded unparsed to the sink),
12 model messages a second back (6.4 KB, read and dropped) and 20 bot messages a second out (2.6 KB, timer-paced).
The relay does nothing else: no JSON, no base64, no state machine. Its CPU per call-second is the floor under
callbot's own figure; the difference is what callbot's code costs. `--floor aiohttp` runs the same relay on aiohttp's
own server instead (its WebSocket reader is compiled), to show what the server stack alone is worth.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from callbot.benchmark import common as c

CALLER_TEXT = '{"kind":"AudioData","audioData":{"data":"' + "A" * 1280 + '","silent":false}}'
MODEL_TEXT = orjson.dumps({"type": "response.audio.delta", "delta": "A" * 6400}).decode()
BOT_TEXT = '{"kind":"AudioData","audioData":{"data":"' + "A" * 2560 + '"}}'
MODEL_PER_S = 12
BOT_PER_S = 20


async def _until_exit(counter: list[int] | None = None) -> None:
    """Serve the orchestrator's commands: `count` answers how many messages arrived so far; `exit` returns."""
    async for command in c.commands():
        if command.get("cmd") == "count" and counter is not None:
            c.emit("count", received=counter[0])
        if command.get("cmd") == "exit":
            return


# -- sink (Voice Live's place) ---------------------------------------------------------------------------------


async def _sink(config: dict[str, Any]) -> None:
    received = [0]  # caller messages that reached the sink, over all sockets

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)

        async def talk() -> None:
            while True:
                await asyncio.sleep(1 / MODEL_PER_S)
                await ws.send_str(MODEL_TEXT)

        talker = asyncio.create_task(talk())
        try:
            async for _ in ws:
                received[0] += 1
        finally:
            talker.cancel()
        return ws

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    c.emit("ready", url=f"http://127.0.0.1:{port}/")
    await _until_exit(received)
    await runner.cleanup()


# -- relay (callbot's place, on callbot's server stack) ---------------------------------------------------------


async def _relay_call(model: aiohttp.ClientWebSocketResponse, receive: Callable[[], Awaitable[str | None]],
                      send: Callable[[str], Awaitable[None]]) -> None:
    """One relayed call: caller messages on to the model unparsed, model messages read and dropped, bot messages out
    on a timer; until `receive` returns None (the caller's socket closed)."""

    async def down() -> None:
        async for _ in model:
            pass

    async def out() -> None:
        while True:
            await asyncio.sleep(1 / BOT_PER_S)
            await send(BOT_TEXT)

    tasks = [asyncio.create_task(down()), asyncio.create_task(out())]
    try:
        while (text := await receive()) is not None:
            await model.send_frame(text.encode(), aiohttp.WSMsgType.TEXT)
    finally:
        for task in tasks:
            task.cancel()
        await model.close()


def _relay_app(sink_url: str) -> Any:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    session: dict[str, aiohttp.ClientSession] = {}

    async def relay(ws: WebSocket) -> None:
        await ws.accept()
        if "s" not in session:
            session["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

        async def receive() -> str | None:
            message = await ws.receive()
            return None if message["type"] == "websocket.disconnect" else str(message["text"])

        await _relay_call(await session["s"].ws_connect(sink_url, max_msg_size=0), receive, ws.send_text)

    return Starlette(routes=[WebSocketRoute("/", relay)])


def _run_relay(port: int, sink_url: str) -> None:
    import uvicorn

    from callbot.server import WS_MAX_BYTES

    config = uvicorn.Config(_relay_app(sink_url), host="127.0.0.1", port=port, log_config=None, proxy_headers=True,
                            ws_max_size=WS_MAX_BYTES, ws_ping_interval=20.0, access_log=False)
    uvicorn.Server(config).run()


async def _aiohttp_relay(config: dict[str, Any]) -> None:
    """The same relay on aiohttp's own server (its WebSocket reader is compiled), for comparison."""
    sink_url = str(config["sink"])
    client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def relay(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)

        async def receive() -> str | None:
            message = await ws.receive()
            return str(message.data) if message.type == aiohttp.WSMsgType.TEXT else None

        await _relay_call(await client.ws_connect(sink_url, max_msg_size=0), receive, ws.send_str)
        return ws

    app = web.Application()
    app.router.add_get("/", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(config["port"])).start()
    await _until_exit()
    await client.close()
    await runner.cleanup()


# -- load (ACS's place) -----------------------------------------------------------------------------------------


async def _load(config: dict[str, Any]) -> None:
    url, calls = config["url"], int(config["calls"])
    received = [0]  # bot messages that reached the load, over all sockets
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = [await session.ws_connect(url, max_msg_size=0) for _ in range(calls)]

        async def drain(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for _ in ws:
                received[0] += 1

        readers = [asyncio.create_task(drain(ws)) for ws in sockets]
        c.emit("ready")

        async def send() -> None:  # like the bench's ACS side: calls spread over 20 phase slots of the 20 ms period
            slots = [sockets[i::20] for i in range(20)]
            start = time.monotonic()
            tick = 0
            while True:
                for slot, group in enumerate(slots):
                    delay = start + tick * c.FRAME_S + slot * c.FRAME_S / 20 - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    for ws in group:
                        await ws.send_str(CALLER_TEXT)
                tick += 1

        sender = asyncio.create_task(send())
        await _until_exit(received)
        sender.cancel()
        for task in readers:
            task.cancel()
        for ws in sockets:
            await ws.close()


# -- orchestration ----------------------------------------------------------------------------------------------


async def run_floor(calls: int, seconds: float, progress: Any, server: str = "uvicorn") -> dict[str, Any]:
    from callbot.benchmark.run import Child, _cpu, _free_port, _pin, _psutil

    psutil = _psutil()
    c.raise_file_limit()
    children: list[Child] = []
    relay: asyncio.subprocess.Process | None = None
    logs = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="callbot-floor-"))
    try:
        sink = await Child.start("callbot.benchmark.floor", {"role": "sink"}, logs / "sink.log")
        children.append(sink)
        sink_url = (await sink.expect("ready", timeout=20))["url"]
        port = _free_port()
        relay = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callbot.benchmark.floor", orjson.dumps(
                {"role": "relay" if server == "uvicorn" else "aiohttp-relay", "port": port, "sink": sink_url}).decode(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await _wait_port(port)
        progress(f"floor: opening {calls} relayed sockets")
        load = await Child.start("callbot.benchmark.floor", {"role": "load", "url": f"ws://127.0.0.1:{port}/",
                                                             "calls": calls}, logs / "load.log")
        children.append(load)
        await load.expect("ready", timeout=60)
        srv = psutil.Process(relay.pid)
        pinning = _pin(psutil, srv, [psutil.Process(load.proc.pid), psutil.Process(sink.proc.pid)])
        await asyncio.sleep(2.0)  # warm-up
        progress(f"floor: measuring {seconds:.0f} s")
        counts0 = await _counts(sink, load)
        t0, cpu0 = time.monotonic(), _cpu(srv)
        await asyncio.sleep(seconds)
        wall, cpu = time.monotonic() - t0, _cpu(srv) - cpu0
        counts = [b - a for a, b in zip(counts0, await _counts(sink, load), strict=True)]
        return {"calls": calls, "seconds": round(wall, 2), "pinning": pinning, "server": server,
                "relay_cpu_ms_per_call_second": round(1000 * cpu / (calls * wall), 3),
                "relay_cpu_percent_of_core": round(100 * cpu / wall, 1),
                "messages_per_call_second": {"caller_in": 50, "model_out": 50, "model_in": MODEL_PER_S,
                                             "bot_out": BOT_PER_S},
                "relayed_per_call_second": {"to_model": round(counts[0] / (calls * wall), 1),
                                            "to_caller": round(counts[1] / (calls * wall), 1)}}
    finally:
        for child in reversed(children):
            await child.stop()
        if relay is not None:
            if relay.stdin is not None:
                relay.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                relay.terminate()
            await relay.wait()
        await asyncio.to_thread(shutil.rmtree, logs, True)


async def _counts(sink: Any, load: Any) -> list[int]:
    """Messages relayed so far: (caller -> model at the sink, bot -> caller at the load)."""
    out = []
    for child in (sink, load):
        child.send({"cmd": "count"})
        out.append(int((await child.expect("count", timeout=10))["received"]))
    return out


async def _wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise c.BenchError("the floor relay did not start")


def format_floor(result: dict[str, Any]) -> str:
    stack = ("uvicorn + Starlette + websockets" if result["server"] == "uvicorn" else "aiohttp's server") + " + aiohttp"
    return (f"stack floor: {result['calls']} relayed calls for {result['seconds']} s ({result['pinning']})\n"
            f"relay CPU      {result['relay_cpu_ms_per_call_second']} ms per call-second "
            f"({result['relay_cpu_percent_of_core']}% of a core): {stack} moving a call's messages, no bridge logic\n"
            f"relayed        {result['relayed_per_call_second']['to_model']} messages a second per call to the model, "
            f"{result['relayed_per_call_second']['to_caller']} to the caller")


def main() -> None:
    config = orjson.loads(sys.argv[1])
    role = config.pop("role")
    if role == "relay":
        _run_relay(int(config["port"]), str(config["sink"]))
        return
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    c.run_child({"sink": _sink, "load": _load, "aiohttp-relay": _aiohttp_relay}[role])


if __name__ == "__main__":
    main()
