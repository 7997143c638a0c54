"""The ACS stand-in: HMAC verification as documented by Microsoft, routes, recording, hooks and callbacks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from callbot.acs.events import IncomingCall, SubscriptionValidation, parse_callback_events, parse_event_grid
from callbot.local.acs.server import AcsServer, AnsweredCall, subscription_validation_event

KEY = secrets.token_bytes(32)
STREAMING = {"transportUrl": "ws://127.0.0.1:9/ws/media/c1", "transportType": "websocket", "contentType": "audio",
             "audioChannelType": "mixed", "startMediaStreaming": True, "enableBidirectional": True,
             "audioFormat": "pcm24KMono", "enableDtmfTones": True}


@pytest.fixture
async def acs() -> AsyncIterator[AcsServer]:
    async with AcsServer(base64.b64encode(KEY).decode()) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def signed_headers(method: str, url: str, body: bytes, *, key: bytes = KEY, date_header: str = "x-ms-date",
                   when: datetime | None = None) -> dict[str, str]:
    """Sign as https://learn.microsoft.com/rest/api/communication/authentication describes."""
    parts = urlsplit(url)
    path_and_query = parts.path + (f"?{parts.query}" if parts.query else "")
    date = format_datetime(when or datetime.now(UTC), usegmt=True)
    content_hash = base64.b64encode(hashlib.sha256(body).digest()).decode()
    to_sign = f"{method}\n{path_and_query}\n{date};{parts.netloc};{content_hash}"
    signature = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest()).decode()
    return {date_header: date, "x-ms-content-sha256": content_hash, "Content-Type": "application/json",
            "Authorization": f"HMAC-SHA256 SignedHeaders={date_header};host;x-ms-content-sha256&Signature={signature}"}


async def send(http: aiohttp.ClientSession, acs: AcsServer, method: str, path: str, payload: Any = None,
               **sign: Any) -> tuple[int, Any]:
    url = f"{acs.url}{path}{'&' if '?' in path else '?'}api-version=2026-03-12"
    body = b"" if payload is None else json.dumps(payload).encode()
    async with http.request(method, url, data=body, headers=signed_headers(method, url, body, **sign)) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


def answer_body(acs: AcsServer, **overrides: Any) -> dict[str, Any]:
    context = acs.incoming_call_event()["data"]["incomingCallContext"]
    body = {"incomingCallContext": context, "callbackUri": "http://127.0.0.1:9/api/callbacks/c1",
            "mediaStreamingOptions": dict(STREAMING), "operationContext": "c1"}
    body.update(overrides)
    return body


async def test_connection_string_points_at_the_server_with_the_same_key(acs: AcsServer) -> None:
    assert acs.connection_string == f"endpoint={acs.url}/;accesskey={base64.b64encode(KEY).decode()}"
    assert acs.url.startswith("http://127.0.0.1:") and not acs.url.endswith(":0")


async def test_signed_answer_is_accepted_with_acs_shaped_properties(acs: AcsServer, http: aiohttp.ClientSession
                                                                    ) -> None:
    status, reply = await send(http, acs, "POST", "/calling/callConnections:answer", answer_body(acs))
    assert status == 200
    assert set(reply) >= {"callConnectionId", "serverCallId", "callbackUri", "callConnectionState",
                          "correlationId", "mediaStreamingSubscription"}
    assert reply["callConnectionState"] == "connecting"
    assert reply["mediaStreamingSubscription"]["subscribedContentTypes"] == ["audio"]
    call = acs.calls[reply["callConnectionId"]]
    assert (call.transport_url, call.audio_format, call.operation_context) == (
        STREAMING["transportUrl"], "pcm24KMono", "c1")
    status, properties = await send(http, acs, "GET", f"/calling/callConnections/{call.call_connection_id}")
    assert status == 200 and properties["callConnectionId"] == call.call_connection_id


async def test_the_date_header_may_be_used_instead_of_x_ms_date(acs: AcsServer, http: aiohttp.ClientSession
                                                                ) -> None:
    status, _ = await send(http, acs, "POST", "/calling/callConnections:reject",
                           {"incomingCallContext": "ctx", "callRejectReason": "busy"}, date_header="Date")
    assert status == 204 and acs.rejected == [("ctx", "busy")]


@pytest.mark.parametrize(
    ("sign", "reason"),
    [
        ({"key": b"another key"}, "signature does not match"),
        ({"skew": timedelta(minutes=-16)}, "away from the server clock"),
        ({"skew": timedelta(minutes=16)}, "away from the server clock"),
    ],
)
async def test_bad_signatures_and_stale_dates_get_401(acs: AcsServer, http: aiohttp.ClientSession,
                                                      sign: dict[str, Any], reason: str) -> None:
    if "skew" in sign:  # the date is taken when the test runs, not when it was collected
        sign = {"when": datetime.now(UTC) + sign["skew"]}
    status, reply = await send(http, acs, "POST", "/calling/callConnections:answer", answer_body(acs), **sign)
    assert status == 401
    assert reply["error"]["code"] == "7509" and reason in reply["error"]["message"]
    assert acs.calls == {} and not acs.requests[-1].authorized


async def test_a_date_within_the_window_is_accepted(acs: AcsServer, http: aiohttp.ClientSession) -> None:
    when = datetime.now(UTC) - timedelta(minutes=14)
    status, _ = await send(http, acs, "POST", "/calling/callConnections:answer", answer_body(acs), when=when)
    assert status == 200


async def test_tampered_body_missing_and_partial_auth_get_401(acs: AcsServer, http: aiohttp.ClientSession) -> None:
    url = f"{acs.url}/calling/callConnections:answer?api-version=2026-03-12"
    body = json.dumps(answer_body(acs)).encode()
    headers = signed_headers("POST", url, body)
    cases = [
        (body.replace(b"pcm24KMono", b"pcm16KMono"), headers, "x-ms-content-sha256 does not match"),
        (body, {"Content-Type": "application/json"}, "missing or non HMAC-SHA256"),
        (body, {**headers, "Authorization": headers["Authorization"].replace("x-ms-date;", "")}, "SignedHeaders"),
        (body, {k: v for k, v in headers.items() if k != "x-ms-date"}, "signed header is missing"),
        (body, {**headers, "x-ms-date": "yesterday"}, "not an RFC 1123 date"),
    ]
    for data, sent_headers, reason in cases:
        async with http.post(url, data=data, headers=sent_headers) as resp:
            assert resp.status == 401
            assert reason in (await resp.json())["error"]["message"]
    assert acs.calls == {}
    assert [r.authorized for r in acs.requests] == [False] * len(cases)


async def test_a_signature_for_another_path_is_refused(acs: AcsServer, http: aiohttp.ClientSession) -> None:
    body = json.dumps({"incomingCallContext": "ctx"}).encode()
    headers = signed_headers("POST", f"{acs.url}/calling/callConnections:answer?api-version=2026-03-12", body)
    async with http.post(f"{acs.url}/calling/callConnections:reject?api-version=2026-03-12", data=body,
                         headers=headers) as resp:
        assert resp.status == 401
    assert acs.rejected == []


async def test_unknown_calls_routes_and_bad_requests(acs: AcsServer, http: aiohttp.ClientSession) -> None:
    assert (await send(http, acs, "GET", "/calling/callConnections/nope"))[0] == 404
    assert (await send(http, acs, "POST", "/calling/callConnections/nope:terminate"))[0] == 404
    assert (await send(http, acs, "DELETE", "/calling/callConnections/nope"))[0] == 404
    status, reply = await send(http, acs, "POST", "/calling/somethingElse")
    assert status == 404 and "error" in reply
    bad_format = answer_body(acs, mediaStreamingOptions={**STREAMING, "audioFormat": "pcm8KMono"})
    status, reply = await send(http, acs, "POST", "/calling/callConnections:answer", bad_format)
    assert status == 400 and "audioFormat" in reply["error"]["message"]
    status, reply = await send(http, acs, "POST", "/calling/callConnections:answer", {"callbackUri": "x"})
    assert status == 400 and "incomingCallContext" in reply["error"]["message"]


async def test_tls_can_be_required_like_acs() -> None:
    async with AcsServer(KEY, require_tls=True) as strict, aiohttp.ClientSession() as http:
        status, reply = await send(http, strict, "POST", "/calling/callConnections:answer", answer_body(strict))
        assert status == 400 and "https" in reply["error"]["message"]
        secure = answer_body(strict, callbackUri="https://bot.example.com/cb",
                             mediaStreamingOptions={**STREAMING, "transportUrl": "wss://bot.example.com/ws"})
        assert (await send(http, strict, "POST", "/calling/callConnections:answer", secure))[0] == 200


async def test_repeated_repeatability_id_gets_the_first_reply(acs: AcsServer, http: aiohttp.ClientSession) -> None:
    url = f"{acs.url}/calling/callConnections:answer?api-version=2026-03-12"
    body = json.dumps(answer_body(acs)).encode()
    replies = []
    for _ in range(2):
        headers = {**signed_headers("POST", url, body), "Repeatability-Request-ID": "r-1"}
        async with http.post(url, data=body, headers=headers) as resp:
            replies.append(await resp.json())
    assert replies[0] == replies[1] and len(acs.calls) == 1


async def test_wait_for_returns_requests_in_order_and_times_out(acs: AcsServer, http: aiohttp.ClientSession
                                                                ) -> None:
    waiter = asyncio.create_task(acs.wait_for("reject"))
    for context in ("a", "b"):
        await send(http, acs, "POST", "/calling/callConnections:reject", {"incomingCallContext": context})
    assert (await waiter).body["incomingCallContext"] == "a"
    assert (await acs.wait_for("reject")).body["incomingCallContext"] == "b"
    with pytest.raises(TimeoutError, match="no reject request"):
        await acs.wait_for("reject", timeout=0.05)


async def test_on_answer_hook_posts_acs_shaped_callbacks_to_the_service(
        acs: AcsServer, http: aiohttp.ClientSession) -> None:
    received: list[tuple[str | None, bytes]] = []

    async def callbacks(request: web.Request) -> web.Response:
        received.append((request.headers.get("Authorization"), await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/api/callbacks/c1", callbacks)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    callback_url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/callbacks/c1"
    hooked: asyncio.Queue[AnsweredCall] = asyncio.Queue()

    async def on_answer(call: AnsweredCall) -> None:
        status = await acs.post_callback(call.callback_uri, "CallConnected", call.call_connection_id,
                                         authorization="Bearer test-jwt")
        assert status == 200
        await hooked.put(call)

    acs.on_answer = on_answer
    try:
        status, reply = await send(http, acs, "POST", "/calling/callConnections:answer",
                                   answer_body(acs, callbackUri=callback_url))
        assert status == 200
        call = await asyncio.wait_for(hooked.get(), 5)
        assert call.call_connection_id == reply["callConnectionId"]
        assert acs.states[call.call_connection_id] == "connected"
        failed = await acs.post_callback(callback_url, "MediaStreamingFailed", call.call_connection_id)
        assert failed == 200
    finally:
        await runner.cleanup()
    assert acs.hook_errors == []
    assert [auth for auth, _ in received] == ["Bearer test-jwt", None]
    raw = received[0][1]
    assert json.loads(raw)[0]["data"]["publicEventType"] == "Microsoft.Communication.CallConnected"
    [connected] = parse_callback_events(raw)
    assert (connected.name, connected.call_connection_id, connected.operation_context) == (
        "CallConnected", call.call_connection_id, "c1")
    assert (connected.server_call_id, connected.correlation_id) == (call.server_call_id, call.correlation_id)
    assert connected.result_code == 200
    [streaming_failed] = parse_callback_events(received[1][1])
    assert streaming_failed.result_code == 500
    assert streaming_failed.data["mediaStreamingUpdate"]["mediaStreamingStatus"] == "mediaStreamingFailed"


async def test_on_hangup_runs_after_terminate_and_hook_errors_are_kept(acs: AcsServer,
                                                                       http: aiohttp.ClientSession) -> None:
    ended: asyncio.Queue[str] = asyncio.Queue()

    async def on_hangup(call: AnsweredCall) -> None:
        await ended.put(call.call_connection_id)
        raise RuntimeError("simulator bug")

    acs.on_hangup = on_hangup
    _, reply = await send(http, acs, "POST", "/calling/callConnections:answer", answer_body(acs))
    call_id = reply["callConnectionId"]
    assert (await send(http, acs, "POST", f"/calling/callConnections/{call_id}:terminate"))[0] == 204
    assert await asyncio.wait_for(ended.get(), 5) == call_id
    for _ in range(100):
        if acs.hook_errors:
            break
        await asyncio.sleep(0.01)
    assert [str(e) for e in acs.hook_errors] == ["simulator bug"]


async def test_generated_event_grid_events_parse_like_real_ones(acs: AcsServer) -> None:
    event = acs.incoming_call_event("+447700900123", "+18005550100", display_name="Sam")
    validation = subscription_validation_event("code-1")
    parsed = parse_event_grid(json.dumps([validation, event]).encode())
    assert parsed[0] == SubscriptionValidation(validation_code="code-1", validation_url=None,
                                               event_id=validation["id"])
    assert isinstance(parsed[1], IncomingCall)
    assert (parsed[1].caller_phone, parsed[1].caller_display_name, parsed[1].to_raw_id) == (
        "+447700900123", "Sam", "4:+18005550100")


async def test_fault_switch_fails_only_the_requested_number_of_times(acs: AcsServer,
                                                                     http: aiohttp.ClientSession) -> None:
    acs.fail_next("reject", 503, times=2)
    statuses = [(await send(http, acs, "POST", "/calling/callConnections:reject", {"incomingCallContext": "c"}))[0]
                for _ in range(3)]
    assert statuses == [503, 503, 204]
