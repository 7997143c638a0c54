"""Call control end to end over HTTP/WebSocket: callbot under uvicorn, its real async CallAutomationClient against
the ACS stand-in, the real Voice Live SDK against the Voice Live test server.

Also holds the helpers the other `test_app_*` modules share (nothing here is named `test_*` except tests).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import orjson
import pytest
from aiohttp import web

from callbot.local.acs.network import SAMPLE_RATES, PhoneCall, PhoneNetwork
from callbot.local.acs.server import AnsweredCall, subscription_validation_event
from callbot.local.voicelive.server import VoiceLiveServer
from callbot.local.voicelive.session import ServerSession
from callbot.urls import public_urls
from tests.harness import VOICELIVE_KEY, WEBHOOK_SECRET, Running, run_callbot

# -- shared helpers ----------------------------------------------------------------------------------------------------


def phone_env(phone: PhoneNetwork) -> dict[str, str]:
    return {k.lower(): v for k, v in phone.env().items()}


def speechlike(ms: int, rate: int = 24000, seed: int = 1) -> bytes:
    """Deterministic non-silent PCM16 mono."""
    return bytes((i * 37 + seed * 11) % 251 + 1 for i in range(ms * rate * 2 // 1000))


def query_token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


def call_id_of(answered: AnsweredCall) -> str:
    match = re.search(r"/api/callbacks/([^/?]+)", answered.callback_uri)
    assert match, answered.callback_uri
    return match.group(1)


async def post(url: str, body: bytes | str | Any, *, params: dict[str, str] | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """POST raw bytes, text or an async byte iterator (else JSON) with a fresh session; returns (status, body)."""
    data = body if isinstance(body, bytes | str) or hasattr(body, "__aiter__") else orjson.dumps(body)
    async with aiohttp.ClientSession() as http, http.post(
            url, data=data, params=params, headers={"Content-Type": "application/json", **(headers or {})}) as resp:
        return resp.status, await resp.read()


async def post_webhook(cb: Running, events: Any, *, secret: str | None = WEBHOOK_SECRET,
                       headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    params = {"secret": secret} if secret is not None else None
    return await post(f"{cb.url}/api/incoming-call", events, params=params, headers=headers)


async def metrics(cb: Running) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{cb.url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def eventually(predicate: Any, timeout: float = 5.0, what: str = "condition") -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        await asyncio.sleep(0.01)


async def answered_call(phone: PhoneNetwork, cb: Running) -> AnsweredCall:
    """An answered call whose media socket is not open yet (and no callback sent)."""
    event = phone.acs.incoming_call_event()
    status, _ = await post_webhook(cb, [event])
    assert status == 200
    await phone.acs.wait_for("answer")
    context = event["data"]["incomingCallContext"]
    return next(c for c in phone.acs.calls.values() if c.incoming_call_context == context)


async def connect_media(phone: PhoneNetwork, answered: AnsweredCall, *, metadata: bool = True) -> PhoneCall:
    """Open the media socket exactly as ACS does (headers, ACS-signed JWT) and start recording what comes back."""
    assert phone.http is not None and answered.transport_url
    rate = SAMPLE_RATES.get(answered.audio_format or "", 24000)
    ws = await phone.http.ws_connect(answered.transport_url, headers={
        "Authorization": phone.authorization(24 * 3600),
        "x-ms-call-connection-id": answered.call_connection_id,
        "x-ms-call-correlation-id": answered.correlation_id,
    })
    now = time.monotonic()
    call = PhoneCall(phone, answered, ws, rate, now, now)
    phone.calls.append(call)
    call.start_reading()
    if metadata:
        await ws.send_str(orjson.dumps({"kind": "AudioMetadata", "audioMetadata": {
            "subscriptionId": answered.call_connection_id, "encoding": "PCM", "sampleRate": rate,
            "channels": 1, "length": rate * 2 // 50}}).decode())
    return call


async def converse(call: PhoneCall, session: ServerSession, *, rate: int = 24000) -> None:
    """A short exchange: caller audio reaches Voice Live byte-exact, a scripted answer reaches the caller."""
    await session.wait_for("session.update")
    start = len(session.input_audio)
    audio = speechlike(200, rate)
    await call.stream(audio, realtime=False)
    await eventually(lambda: len(session.input_audio) >= start + len(audio), 5, "caller audio at Voice Live")
    assert bytes(session.input_audio[start:]) == audio
    answer = speechlike(200, rate, seed=7)
    since = time.monotonic()
    frames = len(call.bot_audio()) // call.frame_bytes
    handle = await session.start_response(text="hi", audio=answer)
    await handle.wait()
    await call.wait_for_audio(frames=frames + 10)
    assert call.bot_audio(since)[: len(answer)] == answer


class ShortReplies:
    """Voice Live behaviour: every `response.create` (greeting, goodbye) gets 300 ms of audio."""

    def __init__(self, session: ServerSession) -> None:
        self.session = session

    async def on_event(self, event: dict[str, Any]) -> None:
        return None

    async def on_response_create(self, event: dict[str, Any]) -> None:
        rate = 24000 if self.session.config["output_audio_format"] == "pcm16" else 16000
        await self.session.start_response(text="bye", audio=speechlike(300, rate, seed=3))


@asynccontextmanager
async def short_voicelive() -> AsyncIterator[VoiceLiveServer]:
    async with VoiceLiveServer(api_key=VOICELIVE_KEY, behaviour_factory=ShortReplies) as server:
        yield server


@asynccontextmanager
async def gated_proxy(target: str) -> AsyncIterator[tuple[str, asyncio.Event, asyncio.Event]]:
    """An HTTP proxy in front of the ACS stand-in that holds every answer request until `release` is set.

    Yields (proxy URL, held, release): `held` is set once an answer request is waiting. Headers (incl. Host) and
    bodies pass unchanged, so the stand-in's HMAC check still applies to what the SDK signed.
    """
    held, release = asyncio.Event(), asyncio.Event()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        if request.path.endswith(":answer"):
            held.set()
            await release.wait()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding", "connection")}
        async with aiohttp.ClientSession(auto_decompress=False) as http, http.request(
                request.method, target + request.path_qs, data=body, headers=headers) as resp:
            payload = await resp.read()
            return web.Response(status=resp.status, body=payload,
                                content_type=resp.content_type if payload else None)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", held, release
    finally:
        release.set()
        await runner.cleanup()


# -- the Event Grid webhook --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "SubscriptionValidation"], ids=["body-only", "aeg-event-type-header"])
async def test_subscription_validation_handshake_echoes_the_code(phone: PhoneNetwork, voicelive: VoiceLiveServer,
                                                                  header: str | None) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        headers = {"aeg-event-type": header} if header else None
        status, body = await post_webhook(cb, [subscription_validation_event("CODE-1234")], headers=headers)
        assert status == 200
        assert orjson.loads(body) == {"validationResponse": "CODE-1234"}


@pytest.mark.parametrize("media_format,acs_format,rate", [("pcm24k", "pcm24KMono", 24000),
                                                          ("pcm16k", "pcm16KMono", 16000)])
async def test_incoming_call_is_answered_with_exact_media_streaming_options_and_converses(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, media_format: str, acs_format: str, rate: int) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_media_format=media_format,
                           **phone_env(phone)) as cb:
        event = phone.acs.incoming_call_event("+14255550123")
        status, body = await post_webhook(cb, [event])
        assert (status, orjson.loads(body)) == (200, {"accepted": 1})
        answer = await phone.acs.wait_for("answer")
        assert answer.status == 200 and answer.authorized
        assert answer.body["incomingCallContext"] == event["data"]["incomingCallContext"]
        options = dict(answer.body["mediaStreamingOptions"])
        transport = options.pop("transportUrl")
        assert options == {"transportType": "websocket", "contentType": "audio", "audioChannelType": "mixed",
                           "startMediaStreaming": True, "enableBidirectional": True, "audioFormat": acs_format,
                           "enableDtmfTones": True}
        host = cb.url.removeprefix("http://")
        match = re.fullmatch(rf"ws://{re.escape(host)}/ws/media/([0-9a-f]{{32}})\?token=[A-Za-z0-9_.%-]+", transport)
        assert match, transport
        call_id = match.group(1)
        assert re.fullmatch(rf"{re.escape(cb.url)}/api/callbacks/{call_id}\?token=[A-Za-z0-9_.%-]+",
                            answer.body["callbackUri"])
        assert answer.body["operationContext"] == call_id
        assert query_token(transport) != query_token(answer.body["callbackUri"])
        assert list(cb.services.registry.calls) == [call_id]

        answered = next(iter(phone.acs.calls.values()))
        await phone.acs.post_callback(answered.callback_uri, "CallConnected", answered.call_connection_id,
                                      authorization=phone.authorization())
        call = await connect_media(phone, answered)
        session = await voicelive.wait_for_session()
        await converse(call, session, rate=rate)
        await call.hang_up()
        await asyncio.wait_for(session.closed.wait(), 2)


def test_public_urls_use_wss_for_https_and_keep_the_base_path() -> None:
    callback, transport = public_urls("https://bot.example.com/tenant-a", "abc123", "t.c", "t.m")
    assert callback == "https://bot.example.com/tenant-a/api/callbacks/abc123?token=t.c"
    assert transport == "wss://bot.example.com/tenant-a/ws/media/abc123?token=t.m"
    callback, transport = public_urls("https://bot.example.com:8443/", "abc123", "t.c", "t.m")
    assert callback == "https://bot.example.com:8443/api/callbacks/abc123?token=t.c"
    assert transport == "wss://bot.example.com:8443/ws/media/abc123?token=t.m"
    _, transport = public_urls("http://127.0.0.1:8000", "abc123", "a+b/c", "a+b/c")
    assert transport == "ws://127.0.0.1:8000/ws/media/abc123?token=a%2Bb%2Fc"


async def test_webhook_returns_before_the_answer_completes(phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    acs_key = phone.acs.connection_string.split("accesskey=", 1)[1]
    async with gated_proxy(phone.acs.url) as (proxy, held, release):
        env = {**phone_env(phone), "acs_connection_string": f"endpoint={proxy}/;accesskey={acs_key}"}
        async with run_callbot(azure_voicelive_endpoint=voicelive.url, **env) as cb:
            event = phone.acs.incoming_call_event()
            started = time.monotonic()
            # The answer is held at the proxy until the webhook has returned: a webhook that waited for it would
            # never return (wait_for fails after 5 s).
            status, _ = await asyncio.wait_for(post_webhook(cb, [event]), 5)
            webhook_s = time.monotonic() - started
            assert status == 200
            await asyncio.wait_for(held.wait(), 5)
            assert not phone.acs.calls, "the answer has not reached ACS yet"
            assert webhook_s < 2.0
            release.set()
            await phone.acs.wait_for("answer")
            answered = next(iter(phone.acs.calls.values()))
            call = await connect_media(phone, answered)
            session = await voicelive.wait_for_session()
            await converse(call, session)
            await call.hang_up()


# -- mid-call callbacks ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["CallDisconnected", "MediaStreamingFailed"])
async def test_call_ending_callback_closes_the_voicelive_session_and_removes_the_call(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, ending: str) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        call = await phone.place_call(cb.url, WEBHOOK_SECRET)
        session = await voicelive.wait_for_session()
        await session.wait_for("session.update")
        await session.start_response(text="talking", audio=speechlike(3000))
        await call.wait_for_audio(frames=2)
        sent_at = time.monotonic()
        assert await phone.callback(call, ending) == 200
        await asyncio.wait_for(session.closed.wait(), 1.5)
        await asyncio.wait_for(call.closed.wait(), 1.5)  # callbot closes the media socket too
        await eventually(lambda: not cb.services.registry.calls, 1.5, "call removed")
        assert time.monotonic() - sent_at < 1.5
        terminates = [r for r in phone.acs.requests if r.path.endswith(":terminate")]
        if ending == "MediaStreamingFailed":  # the call is still up at ACS, in silence: callbot hangs it up
            assert [r.path for r in terminates] == [f"/calling/callConnections/{call.answered.call_connection_id}"
                                                    f":terminate"]
        else:
            assert terminates == [], "the caller is gone already"


async def test_duplicate_out_of_order_and_unknown_callbacks_are_harmless(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        call = await phone.place_call(cb.url, WEBHOOK_SECRET)  # sent CallConnected + MediaStreamingStarted
        session = await voicelive.wait_for_session()
        for name in ("CallConnected", "MediaStreamingStarted", "CallConnected", "ParticipantsUpdated",
                     "Microsoft.Communication.SomethingNewInFuture", "PlayCompleted", "MediaStreamingStopped"):
            assert await phone.callback(call, name) == 200, name
        assert len(cb.services.registry.calls) == 1
        await converse(call, session)
        assert await phone.callback(call, "CallDisconnected") == 200
        await asyncio.wait_for(session.closed.wait(), 2)
        for name in ("CallDisconnected", "CallConnected", "MediaStreamingFailed", "CallDisconnected"):
            assert await phone.callback(call, name) == 200, f"late {name}"
        await eventually(lambda: not cb.services.registry.calls, 2, "call removed")
        assert len(voicelive.sessions) == 1, "late events never restart a session"
        await call.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no errors logged"
    assert not [r for r in caplog.records if "not live here" in r.getMessage() and r.levelno >= logging.INFO], \
        "events after a normal hang-up are expected: not worth an INFO line"


# -- limits ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("terminate_status", [None, 404], ids=["hang-up", "already-ended"])
async def test_max_call_duration_says_goodbye_then_hangs_up(
        phone: PhoneNetwork, caplog: pytest.LogCaptureFixture, terminate_status: int | None) -> None:
    if terminate_status is not None:
        phone.acs.fail_next("terminate", terminate_status)
    async with short_voicelive() as voicelive, run_callbot(azure_voicelive_endpoint=voicelive.url,
                                                           callbot_max_call_seconds=2, **phone_env(phone)) as cb:
        call = await phone.place_call(cb.url, WEBHOOK_SECRET)
        started = time.monotonic()
        session = await voicelive.wait_for_session()
        create = await session.wait_for("response.create", timeout=6)
        message = create["response"]["pre_generated_assistant_message"]
        assert "goodbye" in message["content"][0]["text"].lower()
        terminate = await phone.acs.wait_for("terminate", timeout=6)
        assert terminate.path == f"/calling/callConnections/{call.answered.call_connection_id}:terminate"
        assert terminate.status == (terminate_status or 204)
        elapsed = time.monotonic() - started
        assert 1.5 <= elapsed <= 2 + 0.3 + 3.0, elapsed  # limit + goodbye audio + generous slack
        assert call.bot_audio(), "the goodbye was played to the caller before hanging up"
        await asyncio.wait_for(session.closed.wait(), 2)
        await eventually(lambda: not cb.services.registry.calls, 2, "call removed")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "an ended call is not an error"


async def test_call_over_the_concurrency_limit_is_rejected_not_answered(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, caplog: pytest.LogCaptureFixture) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_max_concurrent_calls=1,
                           **phone_env(phone)) as cb:
        first = await phone.place_call(cb.url, WEBHOOK_SECRET)
        second = phone.acs.incoming_call_event("+442071838750")
        status, _ = await post_webhook(cb, [second])
        assert status == 200  # acknowledged: Event Grid must not retry it
        reject = await phone.acs.wait_for("reject")
        assert reject.body == {"incomingCallContext": second["data"]["incomingCallContext"],
                               "callRejectReason": "busy"}
        assert len(phone.acs.calls) == 1, "the second call was never answered"
        assert any("rejected" in r.getMessage() and "capacity" in r.getMessage() for r in caplog.records)
        assert "+442071838750" not in caplog.text, "phone numbers are masked in logs"
        assert (await metrics(cb))["callbot_calls_rejected_total"] == 1
        await first.hang_up()
        await eventually(lambda: not cb.services.registry.calls, 2, "first call removed")
        third = await phone.place_call(cb.url, WEBHOOK_SECRET)  # capacity is free again
        await third.hang_up()


# -- health ------------------------------------------------------------------------------------------------------------


async def test_healthz_and_readyz_when_configured(phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb, \
            aiohttp.ClientSession() as http:
        async with http.get(f"{cb.url}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"{cb.url}/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["ready"] is True


async def test_readyz_is_503_with_reasons_when_acs_is_not_configured(voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url) as cb, aiohttp.ClientSession() as http:
        async with http.get(f"{cb.url}/healthz") as resp:
            assert resp.status == 200, "liveness does not depend on configuration"
        async with http.get(f"{cb.url}/readyz") as resp:
            assert resp.status == 503
            problems = (await resp.json())["problems"]
        assert any("ACS" in p and "not configured" in p for p in problems), problems
        assert "ACS_RESOURCE_ID not set" in problems


@pytest.mark.parametrize("streaming_elsewhere", [False, True], ids=["no-media-anywhere", "media-on-another-replica"])
async def test_no_media_socket_hangs_up_unless_acs_streams_to_another_replica(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, monkeypatch: pytest.MonkeyPatch,
        streaming_elsewhere: bool) -> None:
    monkeypatch.setattr("callbot.services.MEDIA_CONNECT_TIMEOUT_S", 0.5)
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        answered = await answered_call(phone, cb)
        session = await voicelive.wait_for_session()  # opened at answer time, before any media socket
        if streaming_elsewhere:  # ACS connected the call and its media went to another replica
            await phone.acs.post_callback(answered.callback_uri, "CallConnected", answered.call_connection_id,
                                          authorization=phone.authorization())
        await eventually(lambda: not cb.services.registry.calls, 5, "call released")
        await asyncio.wait_for(session.closed.wait(), 2)
        terminated = [r for r in phone.acs.requests if r.kind == "terminate"]
        assert bool(terminated) is not streaming_elsewhere
