"""The Twilio routes' guards, against the real app under uvicorn: the webhook signature (the `twilio` package's
RequestValidator), the account, the call cap, unset credentials, and the stream socket's start token."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from callbot.local.voicelive.server import VoiceLiveServer
from tests.harness import run_callbot
from tests.twilio.twilio_side import (
    AUTH_TOKEN,
    CALL_SID,
    CONNECTED,
    post_signed,
    start_message,
    stream,
    twilio_env,
    voice_form,
)

VOICE = "/api/twilio/voice"


async def test_a_signed_webhook_is_answered_with_a_stream_to_the_call_and_its_token_as_a_parameter(
        voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **twilio_env()) as cb:
        status, twiml = await post_signed(cb.url, VOICE, voice_form())
        assert status == 200
        [call] = cb.services.registry.calls.values()
        port = cb.url.rsplit(":", 1)[1]
        assert twiml.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
                                f'<Stream url="ws://127.0.0.1:{port}/ws/twilio/{call.call_id}">'
                                '<Parameter name="token" value="'), twiml
        assert "?" not in twiml.split('url="')[1].split('"')[0], "no query string in the stream URL"
        assert call.correlation_id == CALL_SID and cb.services.metrics.counters["calls_twilio"] == 1


@pytest.mark.parametrize("case", ["missing", "wrong-token", "tampered-form", "other-url", "other-query",
                                  "other-account"])
async def test_the_webhook_refuses_anything_twilio_did_not_sign_for_this_url(
        voicelive: VoiceLiveServer, case: str, caplog: pytest.LogCaptureFixture) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **twilio_env()) as cb:
        form = voice_form()
        kwargs: dict[str, str] = {}
        path = VOICE
        if case == "missing":
            kwargs["signature"] = ""
        elif case == "wrong-token":
            kwargs["token"] = "another-accounts-token-0123456789"
        elif case == "other-url":  # a genuine signature, replayed from another site's webhook
            kwargs["signed_url"] = "https://elsewhere.example.com/api/twilio/voice"
        elif case == "other-query":
            kwargs["signed_url"] = cb.url + VOICE
            path = VOICE + "?x=1"
        elif case == "other-account":
            form["AccountSid"] = "AC" + "9" * 32
        if case == "tampered-form":
            from twilio.request_validator import RequestValidator

            kwargs["signature"] = RequestValidator(AUTH_TOKEN).compute_signature(cb.url + VOICE, form)
            form = {**form, "From": "+14255550111"}
        status, body = await post_signed(cb.url, path, form, **kwargs)
        assert (status, body) == (403, "forbidden")
        assert cb.services.registry.calls == {} and voicelive.sessions == []
        assert cb.services.metrics.counters["twilio_webhook_rejected"] == 1
    assert AUTH_TOKEN not in caplog.text


async def test_a_signature_over_the_query_twilio_called_is_accepted(voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **twilio_env()) as cb:
        status, _ = await post_signed(cb.url, VOICE + "?line=sales", voice_form())
        assert status == 200 and len(cb.services.registry.calls) == 1


async def test_without_credentials_the_twilio_routes_refuse_everything(voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url) as cb:
        status, _ = await post_signed(cb.url, VOICE, voice_form())
        assert status == 403
        status, _ = await post_signed(cb.url, "/api/twilio/status", voice_form(CallStatus="completed"))
        assert status == 403
        async with aiohttp.ClientSession() as http, http.ws_connect(
                cb.url.replace("http", "ws", 1) + "/ws/twilio/abc") as ws:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1008
        assert voicelive.sessions == []


async def test_at_the_call_cap_twilio_is_told_busy(voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_max_concurrent_calls=1,
                           **twilio_env()) as cb:
        assert (await post_signed(cb.url, VOICE, voice_form()))[0] == 200
        status, twiml = await post_signed(cb.url, VOICE, voice_form("CA" + "1" * 32))
        assert status == 200
        assert twiml == '<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="busy" /></Response>'
        assert len(cb.services.registry.calls) == 1
        assert cb.services.metrics.counters["calls_rejected"] == 1


async def test_an_oversized_webhook_body_is_refused_before_parsing(voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **twilio_env()) as cb:
        status, _ = await post_signed(cb.url, VOICE, voice_form(Junk="x" * 70_000))
        assert status == 413 and cb.services.registry.calls == {}


@pytest.mark.parametrize("token", ["none", "forged", "expired", "other-call", "other-purpose", "other-twilio-call",
                                   "silent"])
async def test_the_stream_socket_refuses_a_start_without_this_calls_valid_token_and_nothing_reaches_the_model(
        voicelive: VoiceLiveServer, token: str) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **twilio_env()) as cb:
        status, twiml = await post_signed(cb.url, VOICE, voice_form())
        [call] = cb.services.registry.calls.values()
        session = await voicelive.wait_for_session()  # the bridge opened the session to have the greeting ready
        signer = cb.services.signer
        good = twiml.split('value="')[1].split('"')[0]
        url = cb.url.replace("http", "ws", 1) + f"/ws/twilio/{call.call_id}"
        value: str | None = {
            "none": None,
            "forged": good[:-4] + "AAAA",
            "expired": signer.issue(call.call_id, purpose="twilio", expires_at=time.time() - 1),
            "other-call": signer.issue("another-call", purpose="twilio", expires_at=time.time() + 60),
            "other-purpose": signer.issue(call.call_id, purpose="media", expires_at=time.time() + 60),
            "other-twilio-call": good,
            "silent": good,
        }[token]
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            if token != "silent":
                await ws.send_str(CONNECTED)
                await ws.send_str(start_message(value, CALL_SID if token != "other-twilio-call" else "CA" + "2" * 32))
                await ws.send_str('{"event": "media", "media": {"track": "inbound", "payload": "'
                                  + "/" * 212 + '"}}')
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1008
        assert session.input_audio_bytes == 0, "no caller audio reached the model"
        assert cb.services.metrics.counters["twilio_stream_rejected"] == 1
        assert not call.media_connected and not call.ended, "the call waits on for its real stream"
        async with stream(url, good) as s:  # the real stream still connects
            await s.caller(b"\x7f" * 320)
            await session.wait_for("input_audio_buffer.append", count=2)
        assert bytes(session.input_audio) == b"\x7f" * 320
