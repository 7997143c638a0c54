"""Security end to end over HTTP/WebSocket: ACS-signed JWTs and per-call URL tokens on callbacks and on the media
socket, the webhook secret, and the request/socket limits, each violation visible as a counter at /metrics.

Refused media sockets are accepted and then closed at once, so the client always sees a close code: 1008 (policy
violation) for any authentication or call-state failure, 1013 (try again later) when too many sockets are open.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time

import aiohttp
import orjson
import pytest

from callbot.local.acs.identity import LocalAcsIdentity
from callbot.local.acs.network import PhoneNetwork, audio_message
from callbot.local.acs.server import subscription_validation_event
from callbot.local.voicelive.server import VoiceLiveServer
from callbot.security import CallTokenSigner
from tests.harness import WEBHOOK_SECRET, run_callbot
from tests.test_app_calls import (
    answered_call,
    call_id_of,
    connect_media,
    converse,
    eventually,
    metrics,
    phone_env,
    post_webhook,
    query_token,
    speechlike,
)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_json(value: object) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def bad_authorizations(phone: PhoneNetwork, stranger: LocalAcsIdentity) -> dict[str, str | None]:
    """Authorization header values that must all be refused (None: no header)."""
    identity = phone.identity
    assert identity is not None
    audience, now = phone.resource_id, time.time()
    valid = identity.mint(audience)
    header, payload, signature = valid.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    hs_header = b64url_json({"alg": "HS256", "typ": "JWT", "kid": identity.kid})
    hs_body = b64url_json(claims)
    hs_sig = b64url(hmac.new(identity.public_key_pem(), f"{hs_header}.{hs_body}".encode(), hashlib.sha256).digest())
    tokens: dict[str, str | None] = {
        "expired": identity.mint(audience, now=now - 3600),
        "not-yet-valid": identity.mint(audience, nbf=int(now) + 3600, exp=int(now) + 7200),
        "wrong-audience": identity.mint("11111111-2222-4333-8444-555555555555"),
        "wrong-issuer": identity.mint(audience, iss="https://attacker.example.com"),
        "alg-none": f"{b64url_json({'alg': 'none', 'typ': 'JWT', 'kid': identity.kid})}.{b64url_json(claims)}.",
        "hs256-signed-with-the-public-key": f"{hs_header}.{hs_body}.{hs_sig}",
        "unknown-kid": identity.sign(claims, headers={"kid": "no-such-key"}),
        "other-key-same-kid": stranger.sign(claims, headers={"kid": identity.kid}),
        "tampered-payload": f"{header}.{b64url_json({**claims, 'aud': [audience, 'x'], 'exp': claims['exp'] + 9e5})}"
                            f".{signature}",
        "missing-header": None,
    }
    out: dict[str, str | None] = {name: None if t is None else f"Bearer {t}" for name, t in tokens.items()}
    out["not-bearer"] = f"Basic {valid}"
    return out


async def ws_outcome(url: str, authorization: str | None) -> int | str:
    """Open a media socket: the close code callbot sends at once, or "open" when it stays open (then closed)."""
    headers = {"Authorization": authorization} if authorization else {}
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(url, headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            return f"http {exc.status}"
        try:
            msg = await ws.receive(timeout=0.5)
        except TimeoutError:
            await ws.close()
            return "open"
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return ws.close_code if ws.close_code is not None else "closed"
        await ws.close()
        return "open"


def no_server_errors(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r.getMessage() for r in caplog.records
           if "Exception in ASGI application" in r.getMessage() or "unhandled error" in r.getMessage()]
    assert not bad, bad


# -- ACS-signed JWTs ---------------------------------------------------------------------------------------------------


async def test_callbacks_accept_only_a_valid_acs_token(phone: PhoneNetwork, voicelive: VoiceLiveServer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    stranger = await LocalAcsIdentity.create()
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        answered = await answered_call(phone, cb)
        bad = bad_authorizations(phone, stranger)
        results = {}
        for name, authorization in bad.items():
            results[name] = await phone.acs.post_callback(answered.callback_uri, "CallConnected",
                                                          answered.call_connection_id, authorization=authorization)
        assert results == dict.fromkeys(bad, 401)
        assert await phone.acs.post_callback(answered.callback_uri, "CallConnected", answered.call_connection_id,
                                             authorization=phone.authorization()) == 200
        assert (await metrics(cb))["callbot_callback_rejected_total"] == len(bad)
        rejections = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()
                      and r.name in ("callbot.app", "callbot.socket_guard")]
        assert len(rejections) == len(bad)
    no_server_errors(caplog)


async def test_media_socket_accepts_only_a_valid_acs_token(phone: PhoneNetwork, voicelive: VoiceLiveServer,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    stranger = await LocalAcsIdentity.create()
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        answered = await answered_call(phone, cb)
        assert answered.transport_url
        bad = bad_authorizations(phone, stranger)
        results = {name: await ws_outcome(answered.transport_url, auth) for name, auth in bad.items()}
        assert results == dict.fromkeys(bad, 1008)
        # the answered call's own session opens at answer time; refused sockets open none
        await voicelive.wait_for_session()
        assert len(voicelive.sessions) == 1, "no Voice Live session for a refused socket"
        assert (await metrics(cb))["callbot_media_rejected_total"] == len(bad)
        call = await connect_media(phone, answered)  # the genuine ACS socket still gets in
        await converse(call, await voicelive.wait_for_session())
        await call.hang_up()
    no_server_errors(caplog)


# -- per-call URL tokens -----------------------------------------------------------------------------------------------


async def test_media_socket_refuses_bad_url_tokens_unknown_and_connected_calls(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, caplog: pytest.LogCaptureFixture) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        answered = await answered_call(phone, cb)
        assert answered.transport_url
        call_id = call_id_of(answered)
        base = f"{cb.url.replace('http', 'ws', 1)}/ws/media"
        signer = CallTokenSigner.from_settings(cb.settings)
        other = CallTokenSigner(secrets.token_bytes(32))
        unknown = secrets.token_hex(16)
        urls = {
            "missing-token": f"{base}/{call_id}",
            "empty-token": f"{base}/{call_id}?token=",
            "malformed-token": f"{base}/{call_id}?token=abc",
            "other-signing-key": f"{base}/{call_id}?token={other.issue(call_id, purpose='media', expires_at=2e9)}",
            "expired": f"{base}/{call_id}?token="
                       f"{signer.issue(call_id, purpose='media', expires_at=time.time() - 1)}",
            "callback-token": f"{base}/{call_id}?token={query_token(answered.callback_uri)}",
            "another-calls-token": f"{base}/{call_id}?token="
                                   f"{signer.issue(unknown, purpose='media', expires_at=2e9)}",
        }
        authorization = phone.authorization()
        results = {name: await ws_outcome(url, authorization) for name, url in urls.items()}
        assert results == dict.fromkeys(urls, 1008)
        call = await connect_media(phone, answered)
        session = await voicelive.wait_for_session()
        assert await ws_outcome(answered.transport_url, authorization) == 1008, "already connected"
        await converse(call, session)  # the first socket is unaffected
        await call.hang_up()
        await eventually(lambda: not cb.services.registry.calls, 2, "call removed")
        assert await ws_outcome(answered.transport_url, authorization) == 1008, "ended call"
        assert len(voicelive.sessions) == 1
        assert (await metrics(cb))["callbot_media_rejected_total"] == len(urls) + 2
    no_server_errors(caplog)


async def test_media_socket_for_a_call_answered_by_another_replica_is_taken_over(
        phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    """Replicas share CALLBOT_SIGNING_KEY; the ingress may send a call's media socket to a replica that did not
    answer it. Valid URL and ACS tokens prove the call was answered by this deployment: the replica adopts it, with
    the call connection id from ACS's handshake header."""
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_max_call_seconds=1.5,
                           callbot_greeting="", **phone_env(phone)) as cb:
        signer = CallTokenSigner.from_settings(cb.settings)
        elsewhere = secrets.token_hex(16)
        url = (f"{cb.url.replace('http', 'ws', 1)}/ws/media/{elsewhere}"
               f"?token={signer.issue(elsewhere, purpose='media', expires_at=time.time() + 60)}")
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url, headers={"Authorization": phone.authorization(),
                                                     "x-ms-call-connection-id": "conn-on-replica-a"})
            session = await voicelive.wait_for_session()
            await session.wait_for("session.update")
            assert cb.services.registry.get(elsewhere) is not None
            await ws.send_str(audio_message(bytes(range(256)) * 15))
            await session.wait_for("input_audio_buffer.append")
            # the adopted call is hung up through ACS with the connection id ACS gave in the handshake
            await eventually(lambda: elsewhere not in cb.services.registry.calls, 25, "adopted call ended")
            await ws.close()
        terminated = [r for r in phone.acs.requests if r.path.endswith("conn-on-replica-a:terminate")]
        assert terminated, "hang-up went to the adopted call's connection"
        assert (await metrics(cb))["callbot_calls_adopted_total"] == 1


async def test_callbacks_refuse_bad_url_tokens(phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        answered = await answered_call(phone, cb)
        call_id = call_id_of(answered)
        base = f"{cb.url}/api/callbacks"
        signer = CallTokenSigner.from_settings(cb.settings)
        other_call = secrets.token_hex(16)
        stranger = CallTokenSigner(secrets.token_bytes(32))
        urls = {
            "missing-token": f"{base}/{call_id}",
            "malformed-token": f"{base}/{call_id}?token=not.a-token",
            "other-signing-key": f"{base}/{call_id}?token="
                                 f"{stranger.issue(call_id, purpose='callback', expires_at=2e9)}",
            "expired": f"{base}/{call_id}?token="
                       f"{signer.issue(call_id, purpose='callback', expires_at=time.time() - 1)}",
            "media-token": f"{base}/{call_id}?token={query_token(answered.transport_url or '')}",
            "another-calls-token": f"{base}/{call_id}?token="
                                   f"{signer.issue(other_call, purpose='callback', expires_at=2e9)}",
        }
        results = {}
        for name, url in urls.items():
            results[name] = await phone.acs.post_callback(url, "CallDisconnected", answered.call_connection_id,
                                                          authorization=phone.authorization())
        assert results == dict.fromkeys(urls, 401)
        assert call_id in cb.services.registry.calls, "no refused CallDisconnected ended the call"
        assert (await metrics(cb))["callbot_callback_rejected_total"] == len(urls)


# -- the webhook secret ------------------------------------------------------------------------------------------------


async def test_webhook_secret_is_required_for_validation_and_incoming_calls(
        phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        for secret in (None, "", "wrong-secret", WEBHOOK_SECRET + "x", WEBHOOK_SECRET.upper()):
            validation = [subscription_validation_event("CODE")]
            assert (await post_webhook(cb, validation, secret=secret))[0] == 401, secret
            assert (await post_webhook(cb, [phone.acs.incoming_call_event()], secret=secret))[0] == 401, secret
        status, body = await post_webhook(cb, [subscription_validation_event("CODE")])
        assert (status, orjson.loads(body)) == (200, {"validationResponse": "CODE"})
        assert not [r for r in phone.acs.requests if r.kind == "answer"], "no refused IncomingCall was answered"
        assert (await metrics(cb))["callbot_webhook_rejected_total"] == 10


async def test_webhook_refuses_everything_when_no_secret_is_configured(phone: PhoneNetwork,
                                                                       voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_webhook_secret=None,
                           **phone_env(phone)) as cb, aiohttp.ClientSession() as http:
        for secret in (None, "", "anything"):
            assert (await post_webhook(cb, [subscription_validation_event()], secret=secret))[0] == 401
        async with http.get(f"{cb.url}/readyz") as resp:
            assert resp.status == 503
            assert "CALLBOT_WEBHOOK_SECRET not set" in (await resp.json())["problems"]


# -- limits ------------------------------------------------------------------------------------------------------------


async def test_oversized_media_message_closes_with_1009_but_a_1mib_malformed_one_is_skipped(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, caplog: pytest.LogCaptureFixture) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        call = await phone.place_call(cb.url, WEBHOOK_SECRET)
        session = await voicelive.wait_for_session()
        await session.wait_for("session.update")
        await call.send_raw('{"kind":"AudioData","audioData":{"data":"' + "A" * (1024 * 1024) + '"}}')
        await call.send_raw(b"\x00" * (1024 * 1024))
        await converse(call, session)  # still bridged
        await call.send_raw('{"kind":"AudioData","audioData":{"data":"' + "A" * (2 * 1024 * 1024 + 8) + '"}}')
        await asyncio.wait_for(call.closed.wait(), 5)
        assert call.close_code == 1009
        terminate = await phone.acs.wait_for("terminate")  # no dead air: the call is hung up
        assert call.answered.call_connection_id in terminate.path
        await asyncio.wait_for(session.closed.wait(), 2)
        await eventually(lambda: not cb.services.registry.calls, 2, "call removed")
        assert (await metrics(cb))["callbot_media_message_too_big_total"] == 1
        assert any("1009" in r.getMessage() for r in caplog.records
                   if r.name in ("callbot.app", "callbot.socket_guard"))
    no_server_errors(caplog)


async def test_media_message_flood_closes_the_socket_with_1008(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, caplog: pytest.LogCaptureFixture) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        call = await phone.place_call(cb.url, WEBHOOK_SECRET)
        session = await voicelive.wait_for_session()
        await session.wait_for("session.update")
        await call.stream(speechlike(3000), realtime=False)  # a 150-frame catch-up burst is tolerated
        await call.silence(1.2)  # and so is ACS's real-time 50 frames per second
        assert not call.closed.is_set()
        flood_started = time.monotonic()
        try:
            for _ in range(3000):
                await call.send_raw('{"kind":"Flood"}')
                if call.closed.is_set():
                    break
        except ConnectionResetError:
            pass
        await asyncio.wait_for(call.closed.wait(), 5)
        assert call.close_code == 1008
        assert time.monotonic() - flood_started < 5
        terminate = await phone.acs.wait_for("terminate")  # no dead air: the call is hung up
        assert call.answered.call_connection_id in terminate.path
        await asyncio.wait_for(session.closed.wait(), 2)
        await eventually(lambda: not cb.services.registry.calls, 2, "call removed")
        assert (await metrics(cb))["callbot_media_rate_limited_total"] == 1
        assert any("messages per second" in r.getMessage() for r in caplog.records)
    no_server_errors(caplog)


async def test_too_many_open_media_sockets_are_refused_with_1013(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, caplog: pytest.LogCaptureFixture) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_max_concurrent_calls=1,
                           **phone_env(phone)) as cb:
        answered = await answered_call(phone, cb)
        assert answered.transport_url
        limit = 1 + 10  # CALLBOT_MAX_CONCURRENT_CALLS + MEDIA_EXTRA_SOCKETS
        phone.jwks.delay_s = 1.5  # the first ACS token check fetches the keys: every handshake waits on it
        authorization = phone.authorization()
        pending = [asyncio.create_task(ws_outcome(answered.transport_url, authorization)) for _ in range(limit)]
        await eventually(lambda: cb.services.sockets == limit, 5, "sockets held in their handshake")
        assert await ws_outcome(answered.transport_url, authorization) == 1013
        outcomes = await asyncio.gather(*pending)
        assert sorted(outcomes, key=str) == sorted([1008] * (limit - 1) + ["open"], key=str), outcomes
        values = await metrics(cb)
        assert values["callbot_media_rejected_total"] == limit
        assert any("too many media sockets" in r.getMessage() for r in caplog.records)
        await eventually(lambda: cb.services.sockets == 0, 3, "sockets released")
    no_server_errors(caplog)


async def test_oversized_request_bodies_get_413_and_a_counter(phone: PhoneNetwork, voicelive: VoiceLiveServer,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        answered = await answered_call(phone, cb)
        big = b"[" + b" " * (2 * 1024 * 1024) + b"]"
        assert (await post_webhook(cb, big))[0] == 413
        async with aiohttp.ClientSession() as http, http.post(
                answered.callback_uri, data=big, headers={"Authorization": phone.authorization(),
                                                          "Content-Type": "application/json"}) as resp:
            assert resp.status == 413
        assert (await metrics(cb))["callbot_body_too_large_total"] == 2
        assert sum("413" in r.getMessage() for r in caplog.records if r.name == "callbot.app") == 2
    no_server_errors(caplog)


async def test_an_idle_keep_alive_connection_outlives_the_clients_pools_so_reuse_is_never_reset() -> None:
    # uvicorn's default closes idle connections after 5 s, racing HTTP clients that reuse pooled connections for
    # longer (a request written into the closing connection is reset): callbot keeps them for 75 s
    async with run_callbot() as cb:
        host, port = cb.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        for pause in (0.0, 6.0):
            await asyncio.sleep(pause)
            writer.write(request)
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 5)
            assert status.startswith(b"HTTP/1.1 200"), status
            await asyncio.wait_for(reader.readuntil(b"ok"), 5)
        writer.close()
