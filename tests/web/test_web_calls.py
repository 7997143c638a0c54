"""The web phone's server side with a scripted browser (aiohttp as the page): key exchange, socket security, and a
call end to end through the real app, the real Voice Live SDK and the protocol stand-in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from callbot.local.voicelive.server import VoiceLiveServer
from callbot.recording import load_recording
from callbot.replay import check_recording
from tests.harness import run_callbot

WEB_KEY = "web-phone-key-0123456789"


def speechlike(ms: int, seed: int = 1) -> bytes:
    return bytes((i * 37 + seed * 11) % 251 + 1 for i in range(ms * 48))


class Page:
    """What the browser page does on its socket, recorded."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.audio: list[tuple[float, bytes]] = []
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.audio.append((time.monotonic(), msg.data))
            elif msg.type == aiohttp.WSMsgType.TEXT:
                self.events.append((time.monotonic(), orjson.loads(msg.data)))

    def types(self) -> list[str]:
        return [e["type"] for _, e in self.events]

    async def wait_for(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, event in self.events:
                if event["type"] == kind:
                    return event
            await asyncio.sleep(0.01)
        raise TimeoutError(f"no {kind} message; got {self.types()}")

    async def wait_audio(self, frames: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while sum(len(a) for _, a in self.audio) < frames * 960:
            assert time.monotonic() < deadline, "not enough bot audio"
            await asyncio.sleep(0.01)


async def session_token(http: aiohttp.ClientSession, url: str, key: str | None = None) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{url}/api/phone/session", json={"key": key} if key is not None else {}) as response:
        return response.status, await response.json()


@asynccontextmanager
async def web_call(url: str, key: str | None = None) -> AsyncIterator[Page]:
    async with aiohttp.ClientSession() as http:
        status, body = await session_token(http, url, key)
        assert status == 200, body
        async with http.ws_connect(url.replace("http", "ws", 1) + body["socket"]) as ws:
            page = Page(ws)
            try:
                yield page
            finally:
                page.task.cancel()


async def test_a_web_call_reaches_the_agent_and_back_with_transcripts_barge_in_and_hang_up(
        voicelive: VoiceLiveServer, tmp_path: Path) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_recordings_dir=tmp_path) as cb:
        async with web_call(cb.url) as page:
            session = await voicelive.wait_for_session()
            update = await session.wait_for("session.update")
            assert update["session"]["input_audio_sampling_rate"] == 24000
            await page.wait_for("ready")
            caller = speechlike(400)
            for i in range(0, len(caller), 960):
                await page.ws.send_bytes(caller[i:i + 960])
            await session.wait_for("input_audio_buffer.append", count=20)
            assert bytes(session.input_audio) == caller, "caller audio reaches the model byte-exact"
            await session.transcription_completed("item_c1", "what are your opening hours")
            assert (await page.wait_for("transcript")) == {
                "type": "transcript", "role": "caller", "text": "what are your opening hours", "interrupted": False}
            answer = speechlike(3000, seed=4)
            handle = await session.start_response(text="We open at nine and close at six.", audio=answer,
                                                  chunk_ms=100, realtime_factor=0.0)
            await page.wait_audio(frames=10)
            first = page.audio[0][0]
            await asyncio.sleep(0.6)
            # the page says it has played less than callbot sent (its jitter buffer started late): it decides
            await page.ws.send_str(orjson.dumps({"type": "played", "ms": 400}).decode())
            await asyncio.sleep(0.05)
            await session.speech_started(audio_start_ms=900)
            stop = await page.wait_for("stop")
            assert stop == {"type": "stop"}
            truncate = await session.wait_for("conversation.item.truncate")
            assert truncate["item_id"] == handle.item_ids[0]
            pacing_ms = (time.monotonic() - first) * 1000
            assert 400 <= truncate["audio_end_ms"] <= 400 + 60 + 30, (truncate, pacing_ms)
            assert truncate["audio_end_ms"] < pacing_ms - 100, "the page's report, not pacing, decided"
            stop_at = next(t for t, e in page.events if e["type"] == "stop")
            await asyncio.sleep(0.3)
            assert [a for t, a in page.audio if t > stop_at] == [], "no bot audio after stop"
            await page.wait_for("speech")
            bot_bytes = b"".join(a for _, a in page.audio)
            assert bot_bytes == answer[:len(bot_bytes)], "bot audio arrives as sent, in whole frames"
            assert all(len(a) % 960 == 0 for _, a in page.audio)
            await page.ws.send_str('{"type": "hangup"}')
            hung_up = time.monotonic()
            await asyncio.wait_for(session.closed.wait(), 1.0)
            assert time.monotonic() - hung_up < 1.0
        await until_idle(cb)
        counters = cb.services.metrics.counters
        assert counters["calls_web"] == 1 and counters["barge_ins"] == 1
    [path] = await asyncio.to_thread(lambda: list(tmp_path.glob("*.jsonl")))
    recording = load_recording(path)
    assert recording.transport == "web"
    report = check_recording(recording)
    assert report.ok, report.text()


async def until_idle(cb: Any, timeout: float = 3.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while cb.services.registry.calls:
        assert time.monotonic() < deadline, "call still live"
        await asyncio.sleep(0.02)


async def test_garbage_on_the_page_socket_is_skipped_and_counted_and_the_call_goes_on(
        voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url) as cb:
        async with web_call(cb.url) as page:
            session = await voicelive.wait_for_session()
            await page.wait_for("ready")
            bad_text = ["{not json", "[1]", '{"type": "played", "ms": -1}', '{"type": "played", "ms": "x"}',
                        '{"type": "dance"}', '{"type": "dtmf", "digits": "x"}', "x" * 5000]
            for text in bad_text:
                await page.ws.send_str(text)
            for data in (b"", b"\x01", bytes(960 * 6)):  # empty, half a sample, over 100 ms
                await page.ws.send_bytes(data)
            await page.ws.send_bytes(speechlike(20))
            await session.wait_for("input_audio_buffer.append")
            assert bytes(session.input_audio) == speechlike(20), "only the good frame reached the model"
            await page.ws.send_str('{"type": "hangup"}')
            await asyncio.wait_for(session.closed.wait(), 2)
        await until_idle(cb)
        assert cb.services.metrics.counters["media_malformed"] == len(bad_text) + 3


async def test_with_a_key_the_session_needs_it_and_attempts_are_rate_limited(voicelive: VoiceLiveServer,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_web_phone_key=WEB_KEY) as cb, \
            aiohttp.ClientSession() as http:
        async with http.get(f"{cb.url}/phone/config") as response:
            assert (await response.json())["key_required"] is True
        assert (await session_token(http, cb.url))[0] == 401
        assert (await session_token(http, cb.url, "wrong-key-0123456"))[0] == 401
        status, body = await session_token(http, cb.url, WEB_KEY)
        assert status == 200 and set(body) == {"call_id", "token", "socket", "expires_in"}
        statuses = [(await session_token(http, cb.url, "guess"))[0] for _ in range(4)]
        assert statuses[-1] == 429, statuses
        async with http.post(f"{cb.url}/api/phone/session", json={"key": WEB_KEY}) as response:
            assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
        assert voicelive.sessions == [], "nothing reached Voice Live"
    assert WEB_KEY not in caplog.text


@pytest.mark.parametrize("token", ["none", "forged", "expired", "other-call", "reused"])
async def test_the_page_socket_refuses_anything_without_a_valid_unused_token(
        voicelive: VoiceLiveServer, token: str) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url) as cb, aiohttp.ClientSession() as http:
        status, body = await session_token(http, cb.url)
        assert status == 200
        call_id, good = body["call_id"], body["token"]
        base = cb.url.replace("http", "ws", 1) + f"/ws/phone/{call_id}"
        if token == "reused":
            async with http.ws_connect(f"{base}?token={good}") as first:
                await voicelive.wait_for_session()
                await first.send_str('{"type": "hangup"}')
                await first.receive()
            await until_idle(cb)
        sessions = len(voicelive.sessions)
        signer = cb.services.signer
        url = {
            "none": base,
            "forged": f"{base}?token={good[:-4]}AAAA",
            "expired": f"{base}?token={signer.issue(call_id, purpose='web', expires_at=time.time() - 1)}",
            "other-call": f"{base}?token={signer.issue('another', purpose='web', expires_at=time.time() + 60)}",
            "reused": f"{base}?token={good}",
        }[token]
        async with http.ws_connect(url) as ws:
            await ws.send_bytes(speechlike(20))
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
        assert len(voicelive.sessions) == sessions, "nothing reached Voice Live"
        assert cb.services.metrics.counters["web_rejected"] == 1


async def test_the_web_phone_is_off_unless_turned_on_outside_local_development(voicelive: VoiceLiveServer) -> None:
    remote_acs = "endpoint=https://contoso.communication.azure.com/;accesskey=c2VjcmV0c2VjcmV0"
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, acs_connection_string=remote_acs) as cb, \
            aiohttp.ClientSession() as http:
        for path in ("/phone", "/phone/config"):
            async with http.get(cb.url + path) as response:
                assert response.status == 404
        async with http.post(f"{cb.url}/api/phone/session", json={}) as response:
            assert response.status == 404


async def test_the_page_is_served_with_a_strict_content_policy_and_no_key_in_it(voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_web_phone_key=WEB_KEY) as cb, \
            aiohttp.ClientSession() as http:
        async with http.get(f"{cb.url}/phone/static/../../config.py") as response:
            assert response.status == 404
        async with http.get(f"{cb.url}/phone/static/nothing.js") as response:
            assert response.status == 404
        async with http.get(f"{cb.url}/phone") as response:
            if response.status == 404:
                pytest.skip("the page's files are not in this checkout yet")
            text = await response.text()
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
            assert WEB_KEY not in text
