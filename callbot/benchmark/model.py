"""The synthetic Voice Live service of `callbot bench` (its own process: `python -m callbot.benchmark.model CONFIG`).

A lean aiohttp WebSocket server that the real SDK connects to (`/voice-live/realtime`, `api-key` header). No ASR, no
TTS, no protocol bookkeeping beyond what callbot needs, so the figures measure callbot, not the stand-in. Per session
it records every caller frame's arrival (decoding the tag: call, sequence, send time) and plays a script: answers of
canned tagged audio sent five times faster than real time, each interrupted by `input_audio_buffer.speech_started`
T seconds after its first delta when barge-in is on; without barge-in, answers of `answer_s` then `pause_s` of
silence (the talk profile: the heavy preset speaks 2 s of every 3 s). Commands: `{"cmd": "report", "t0": us,
"t1": us}` writes the result for that window to `config["result_path"]`; `{"cmd": "exit"}` stops.
"""

from __future__ import annotations

import asyncio
import binascii
import hmac
import logging
import random
import struct
from array import array
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from callbot.benchmark import common as c

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Response:
    number: int
    first_us: int = 0
    frames: int = 0
    barged_us: int | None = None
    cancelled: bool = False


@dataclass
class Totals:
    sessions: int = 0
    untagged_frames: int = 0
    unexpected: dict[str, int] = field(default_factory=dict)


def _dumps(event: dict[str, Any]) -> str:
    return orjson.dumps(event).decode()


class ModelSession:
    def __init__(self, ws: web.WebSocketResponse, cfg: dict[str, Any], totals: Totals) -> None:
        self.ws = ws
        self.barge_in_s: float = cfg["barge_in_every"]
        self.answer_s: float = cfg.get("answer_s", c.RESPONSE_S)  # without barge-in: answer length, then a pause
        self.pause_s: float = cfg.get("pause_s", c.PAUSE_S)
        self.frames_b64 = c.bot_frames_mulaw if cfg.get("audio") == "g711_ulaw" else c.bot_frames_b64
        self.frame_bytes = c.MULAW_FRAME_BYTES if cfg.get("audio") == "g711_ulaw" else c.FRAME_BYTES
        self.totals = totals
        self.call = -1
        self.seqs = array("q")
        self.sent_us = array("q")
        self.latency_us = array("q")
        self.responses: list[Response] = []
        self.streaming: Response | None = None
        self.cancel_requested = False

    async def send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def run(self) -> None:
        await self.send(_dumps({"type": "session.created", "session": {"id": f"sess_{id(self):x}"}}))
        driver: asyncio.Task[None] | None = None
        try:
            async for msg in self.ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                arrived = c.now_us()
                event = orjson.loads(msg.data)
                etype = event.get("type")
                if etype == "input_audio_buffer.append":
                    self._caller_frame(event.get("audio"), arrived)
                elif etype == "session.update":
                    await self.send(_dumps({"type": "session.updated", "session": event.get("session", {})}))
                    if driver is None:
                        driver = asyncio.create_task(self._drive())
                elif etype == "response.cancel":
                    if self.streaming is not None:
                        self.cancel_requested = True
                    else:
                        await self.send(_dumps({"type": "error", "error": {
                            "type": "invalid_request_error", "code": "response_cancel_not_active",
                            "message": "no active response"}}))
                elif etype == "conversation.item.truncate":
                    await self.send(_dumps({"type": "conversation.item.truncated", "item_id": event.get("item_id"),
                                            "content_index": event.get("content_index", 0),
                                            "audio_end_ms": event.get("audio_end_ms", 0)}))
                else:
                    key = str(etype)[:60]
                    self.totals.unexpected[key] = self.totals.unexpected.get(key, 0) + 1
        finally:
            if driver is not None:
                driver.cancel()
                await asyncio.gather(driver, return_exceptions=True)

    def _caller_frame(self, audio: Any, arrived: int) -> None:
        try:
            tags = c.read_caller_tags(audio, self.frame_bytes)
        except (TypeError, binascii.Error, struct.error):
            self.totals.untagged_frames += 1
            return
        for call, seq, sent in tags:  # a 40 ms append's first frame waited 20 ms for its second: that is counted
            if self.call < 0:
                self.call = call
            self.seqs.append(seq)
            self.sent_us.append(sent)
            self.latency_us.append(arrived - sent)

    async def _drive(self) -> None:
        """The model's side of the conversation: answer, get interrupted (or finish), answer again."""
        barge = self.barge_in_s > 0
        length_s = self.barge_in_s + c.BARGE_EXTRA_S if barge else self.answer_s
        period_s = self.barge_in_s + c.RESUME_S if barge else self.answer_s + self.pause_s
        # calls talk independently: spread the first answers over a whole turn, not all at once
        await asyncio.sleep(random.uniform(0.3, 0.3 + period_s))
        total = round(length_s / c.FRAME_S)
        loop = asyncio.get_running_loop()
        number = 0
        while True:
            number += 1
            response = Response(number)
            self.responses.append(response)
            started = loop.time()
            stream = asyncio.create_task(self._stream(response, total))
            if barge:
                await asyncio.sleep(max(0.0, started + self.barge_in_s - loop.time()))
                response.barged_us = c.now_us()
                await self.send(_dumps({"type": "input_audio_buffer.speech_started",
                                        "audio_start_ms": 0, "item_id": f"in_{number}"}))
                await stream
                await asyncio.sleep(c.RESUME_S * random.uniform(0.75, 1.25))
                await self.send(_dumps({"type": "input_audio_buffer.speech_stopped",
                                        "audio_end_ms": 0, "item_id": f"in_{number}"}))
                # server VAD commits the caller's turn at its end (callbot's re-send ring empties there)
                await self.send(_dumps({"type": "input_audio_buffer.committed", "previous_item_id": None,
                                        "item_id": f"in_{number}"}))
            else:
                await stream
                pause = self.pause_s * random.uniform(0.75, 1.25)
                await asyncio.sleep(max(0.0, started + length_s + pause - loop.time()))

    async def _stream(self, response: Response, total: int) -> None:
        call = self.call if self.call >= 0 else 0xFFFF
        rid, iid = f"resp_{call}_{response.number}", f"item_{call}_{response.number}"
        self.streaming, self.cancel_requested = response, False
        await self.send(_dumps({"type": "response.created", "response": {
            "id": rid, "object": "realtime.response", "status": "in_progress", "output": []}}))
        await self.send(_dumps({"type": "response.output_item.added", "response_id": rid, "output_index": 0,
                                "item": {"id": iid, "type": "message", "role": "assistant",
                                         "status": "in_progress", "content": []}}))
        head = ('{"type":"response.audio.delta","response_id":"' + rid + '","item_id":"' + iid
                + '","output_index":0,"content_index":0,"delta":"')
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while response.frames < total and not self.cancel_requested:
            count = min(c.DELTA_FRAMES, total - response.frames)
            sent = c.now_us()
            if response.frames == 0:
                response.first_us = sent
            await self.send(head + self.frames_b64(call, response.number, response.frames, count, sent) + '"}')
            response.frames += count
            next_at += c.DELTA_INTERVAL_S
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        response.cancelled = self.cancel_requested
        status = "cancelled" if response.cancelled else "completed"
        ids = {"response_id": rid, "item_id": iid, "output_index": 0, "content_index": 0}
        if not response.cancelled:
            await self.send(_dumps({"type": "response.audio.done", **ids}))
        await self.send(_dumps({"type": "response.done", "response": {
            "id": rid, "object": "realtime.response", "status": status, "output": []}}))
        self.streaming = None


class ModelServer:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.api_key: str = cfg["api_key"]
        self.sessions: list[ModelSession] = []
        self.totals = Totals()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/voice-live/realtime", self._handle)
        app.router.add_get("/{prefix:.+}/voice-live/realtime", self._handle)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get(c.API_KEY_HEADER, "")
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            return web.json_response({"error": {"code": "401", "message": "Access denied"}}, status=401)
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024, heartbeat=None)
        await ws.prepare(request)
        session = ModelSession(ws, self.cfg, self.totals)
        self.sessions.append(session)
        self.totals.sessions += 1
        await session.run()
        return ws

    def report(self, t0: int, t1: int) -> dict[str, Any]:
        """Per call: caller frames received (distinct, sent in [t0, t1)), their latencies, responses, barge-ins, and how
        long the bot spoke inside the window."""
        calls: dict[int, dict[str, Any]] = {}
        orphan_sessions = 0
        for s in self.sessions:
            if s.call < 0:
                orphan_sessions += 1
                continue
            entry = calls.setdefault(s.call, {"sessions": 0, "seqs": set(), "latency_us": [], "responses": [],
                                              "speaking_us": 0})
            entry["sessions"] += 1
            for seq, sent, latency in zip(s.seqs, s.sent_us, s.latency_us, strict=True):
                if t0 <= sent < t1 and seq not in entry["seqs"]:
                    entry["seqs"].add(seq)
                    entry["latency_us"].append(latency)
            entry["speaking_us"] += sum(c.speaking_us(r.first_us, r.frames, r.barged_us, t0, t1)
                                        for r in s.responses if r.first_us)  # also answers begun before t0
            entry["responses"].extend(
                {"number": r.number, "first_us": r.first_us, "frames": r.frames, "barged_us": r.barged_us,
                 "cancelled": r.cancelled}
                for r in s.responses if r.first_us and t0 <= r.first_us < t1)
        for entry in calls.values():
            entry["received"] = len(entry.pop("seqs"))
        return {"calls": {str(k): v for k, v in calls.items()}, "sessions": self.totals.sessions,
                "orphan_sessions": orphan_sessions, "untagged_frames": self.totals.untagged_frames,
                "unexpected_events": self.totals.unexpected}


async def main(cfg: dict[str, Any]) -> None:
    server = ModelServer(cfg)
    await server.start()
    c.emit("ready", url=server.url)
    try:
        async for command in c.commands():
            if command.get("cmd") == "report":
                result = server.report(int(command["t0"]), int(command["t1"]))
                await asyncio.to_thread(c.write_result, cfg["result_path"], result)
                c.emit("result", path=cfg["result_path"])
            elif command.get("cmd") == "exit":
                break
    finally:
        await server.stop()


if __name__ == "__main__":
    c.run_child(main)
