"""The ACS side of `callbot bench` (its own process: `python -m callbot.benchmark.acs CONFIG`).

Composes `callbot.local.acs.network.PhoneNetwork` (Call Automation REST stand-in with its HMAC check, ACS-signed RS256
tokens, JWKS) with a lean media client per call: tagged 20 ms caller frames paced in real time, and a reader that
measures, frame by frame, what callbot plays back. Calls are spread over 20 phase slots of the 20 ms frame period,
one timer per slot, so N calls cost 1000 timer wake-ups a second rather than 50 N, and arrive unsynchronised as
real calls do. Lifecycle: emit `ready` (the settings callbot needs), wait for `go`, place the calls, warm up, emit
`window` / `window_end` around the measurement, keep going for a grace period, hang up, write the result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from callbot.benchmark import common as c
from callbot.benchmark.acs_calls import AnswerWaiter, MediaCall, Window, place_call
from callbot.local.acs.network import PhoneNetwork

log = logging.getLogger(__name__)

SLOTS = 20
PLACE_CONCURRENCY = 16


@dataclass
class Sender:
    """Paces the caller audio of the calls in one phase slot."""

    offset_s: float
    calls: list[MediaCall] = field(default_factory=list)
    lag_us: list[int] = field(default_factory=list)

    async def run(self, window: Window, stopping: asyncio.Event) -> None:
        next_at = time.monotonic() + self.offset_s  # not loop.time(): uvloop's clock has 1 ms steps
        ticks = 0
        stamp = ""
        while not stopping.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = c.now_us()
            if window.t0 <= now < window.t1:
                self.lag_us.append(max(0, now - int(next_at * 1_000_000)))
            if ticks % 50 == 0:
                stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            ticks += 1
            for call in self.calls:
                if not call.ws.closed:
                    await call.send_frame(stamp)
            next_at += c.FRAME_S


Place = Callable[[aiohttp.ClientSession, Window, int], Awaitable[MediaCall]]
HangUp = Callable[[MediaCall], Awaitable[None]]


async def _place_all(place: Place, http: aiohttp.ClientSession, cfg: dict[str, Any], window: Window,
                     senders: list[Sender], calls: list[MediaCall], errors: list[str]) -> None:
    gate = asyncio.Semaphore(PLACE_CONCURRENCY)
    last_report = 0.0

    async def one(idx: int) -> None:
        nonlocal last_report
        async with gate:
            try:
                call = await place(http, window, idx)
            except (c.BenchError, aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"call {idx}: not placed: {c.describe(exc)}")
                return
        calls.append(call)
        call.start_reading()
        senders[idx % len(senders)].calls.append(call)
        if time.monotonic() - last_report > 0.5 or len(calls) == cfg["calls"]:
            last_report = time.monotonic()
            c.emit("progress", connected=len(calls), failed=len(errors))

    await asyncio.gather(*(one(i) for i in range(cfg["calls"])))
    c.emit("progress", connected=len(calls), failed=len(errors))


async def _hang_up_all(hang_up: HangUp, calls: list[MediaCall]) -> None:
    gate = asyncio.Semaphore(32)

    async def one(call: MediaCall) -> None:
        async with gate:
            await hang_up(call)
            await call.stop_reading()

    await asyncio.gather(*(one(call) for call in calls))


async def run(cfg: dict[str, Any], place: Place, hang_up: HangUp, go: asyncio.Event) -> dict[str, Any]:
    """Place the calls, stream the caller audio, open and close the window, hang up: the result (any transport)."""
    window = Window()
    stopping = asyncio.Event()
    senders = [Sender(offset_s=i * c.FRAME_S / SLOTS) for i in range(SLOTS)]
    calls: list[MediaCall] = []
    errors: list[str] = []
    await go.wait()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=30)) as http:
        sender_tasks = [asyncio.create_task(s.run(window, stopping)) for s in senders]
        try:
            await _place_all(place, http, cfg, window, senders, calls, errors)
            await asyncio.sleep(cfg["warmup"])
            window.t0 = c.now_us()
            c.emit("window", t0=window.t0)
            await asyncio.sleep(cfg["seconds"])
            window.t1 = c.now_us()
            c.emit("window_end", t1=window.t1)
            await asyncio.sleep(cfg["grace"])
            stop_us = c.now_us()
        finally:
            stopping.set()
            await asyncio.gather(*sender_tasks, return_exceptions=True)
        result = {
            "t0": window.t0, "t1": window.t1, "stop": stop_us, "placed": len(calls), "errors": errors,
            "sender_lag_us": [lag for s in senders for lag in s.lag_us],
            "calls": {str(call.idx): call.result(stop_us) for call in calls},
        }
        await _hang_up_all(hang_up, calls)
    return result


async def serve(cfg: dict[str, Any], env: dict[str, str], place: Place, hang_up: HangUp) -> None:
    """The load process's life: `ready` with the env callbot needs, `go`, the run, its result, `exit`."""
    go = asyncio.Event()
    done = asyncio.Event()
    c.emit("ready", env=env)
    task = asyncio.create_task(run(cfg, place, hang_up, go))

    async def commands() -> None:
        async for command in c.commands():
            if command.get("cmd") == "go":
                go.set()
            elif command.get("cmd") == "exit":
                break
        done.set()

    reader = asyncio.create_task(commands())
    try:
        try:
            result = await task
        except (c.BenchError, aiohttp.ClientError, OSError) as exc:
            c.emit("failed", error=c.describe(exc))
        else:
            await asyncio.to_thread(c.write_result, cfg["result_path"], result)
            c.emit("result", path=cfg["result_path"])
        await done.wait()
    finally:
        task.cancel()
        reader.cancel()
        await asyncio.gather(task, reader, return_exceptions=True)


async def main(cfg: dict[str, Any]) -> None:
    async with PhoneNetwork() as network:
        waiter = AnswerWaiter(network)

        async def place(http: aiohttp.ClientSession, window: Window, idx: int) -> MediaCall:
            return await place_call(network, http, waiter, window, cfg["url"], cfg["secret"], idx)

        async def hang_up(call: MediaCall) -> None:
            await call.ws.close()
            assert call.answered is not None
            try:
                await network.acs.post_callback(call.answered.callback_uri, "CallDisconnected",
                                                call.answered.call_connection_id,
                                                authorization=network.authorization())
            except (aiohttp.ClientError, TimeoutError):
                pass  # callbot already ended the call when the media socket closed

        await serve(cfg, network.env(), place, hang_up)


if __name__ == "__main__":
    c.run_child(main)
