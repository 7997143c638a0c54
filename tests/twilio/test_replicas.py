"""Twilio calls across replicas: a stream the ingress sends to a replica that did not answer the webhook is adopted
there (its start's token decides), and the answering replica lets go of the call without hanging it up; a call whose
stream never came anywhere is hung up through Twilio's REST API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from callbot.local.twilio.rest import TwilioRest
from callbot.local.voicelive.server import VoiceLiveServer
from callbot.twilio import calls
from tests.harness import run_callbot
from tests.test_app_calls import eventually
from tests.twilio.twilio_side import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CALL_SID,
    CALLER,
    CONNECTED,
    post_signed,
    start_message,
    stream,
    voice_form,
)

VOICE = "/api/twilio/voice"


@pytest.fixture
async def rest() -> AsyncIterator[TwilioRest]:
    server = TwilioRest(ACCOUNT_SID, AUTH_TOKEN)
    await server.start()
    server.add_call(CALL_SID, CALLER, "+14255550199")
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(autouse=True)
def short_stream_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calls, "STREAM_CONNECT_TIMEOUT_S", 1.0)


def _stream_of(twiml: str) -> tuple[str, str]:
    """(call id, token) from the TwiML's <Stream url=".../ws/twilio/{call_id}"> and its token <Parameter>."""
    url = twiml.split('url="')[1].split('"')[0]
    return url.rsplit("/", 1)[1], twiml.split('value="')[1].split('"')[0]


async def test_a_stream_sent_to_another_replica_is_adopted_there_and_the_answering_replica_lets_go(
        voicelive: VoiceLiveServer, rest: TwilioRest) -> None:  # fmt: skip
    env = {"azure_voicelive_endpoint": voicelive.url, "twilio_account_sid": ACCOUNT_SID,
           "twilio_auth_token": AUTH_TOKEN, "twilio_api_base_url": rest.url}
    async with run_callbot(**env) as answering, run_callbot(**env) as other:
        status, twiml = await post_signed(answering.url, VOICE, voice_form())
        assert status == 200
        call_id, token = _stream_of(twiml)
        first = await voicelive.wait_for_session(0)  # the answering replica's, opened for the greeting
        rest.set_status(CALL_SID, "in-progress")  # Twilio connected the stream (to the other replica)
        url = other.url.replace("http", "ws", 1) + f"/ws/twilio/{call_id}"
        async with stream(url, token) as twilio:
            adopted = await voicelive.wait_for_session(1)
            await twilio.caller(b"\x55" * 320)
            await adopted.wait_for("input_audio_buffer.append", count=2)
            assert bytes(adopted.input_audio) == b"\x55" * 320
            assert other.services.metrics.counters["calls_adopted"] == 1
            assert other.services.registry.get(call_id) is not None
            # the answering replica's stream watchdog: the call is live at Twilio, so its stream is elsewhere
            await eventually(lambda: answering.services.registry.get(call_id) is None, 10, "answering let go")
            await asyncio.wait_for(first.closed.wait(), 5)
            assert first.input_audio_bytes == 0
            assert not [r for r in rest.requests if r.method == "POST"], "nobody hung the call up"
            await twilio.caller(b"\x66" * 160)  # the adopted call goes on
            await adopted.wait_for("input_audio_buffer.append", count=3)
        assert [r.method for r in rest.requests] == ["GET"]


async def test_an_adopting_replica_refuses_a_stream_without_a_valid_token(voicelive: VoiceLiveServer,
                                                                          rest: TwilioRest) -> None:
    env = {"azure_voicelive_endpoint": voicelive.url, "twilio_account_sid": ACCOUNT_SID,
           "twilio_auth_token": AUTH_TOKEN, "twilio_api_base_url": rest.url}
    async with run_callbot(**env) as other:
        url = other.url.replace("http", "ws", 1) + "/ws/twilio/" + "a" * 32
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.send_str(CONNECTED)
            await ws.send_str(start_message("not-a-token", CALL_SID))
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1008
        assert other.services.registry.calls == {}
        assert voicelive.sessions == [], "no Voice Live session for a stream nobody can vouch for"
        assert other.services.metrics.counters["twilio_stream_rejected"] == 1
        assert "calls_adopted" not in other.services.metrics.counters


async def test_a_call_whose_stream_never_came_is_hung_up_through_twilio(voicelive: VoiceLiveServer,
                                                                       rest: TwilioRest) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, twilio_account_sid=ACCOUNT_SID,
                           twilio_auth_token=AUTH_TOKEN, twilio_api_base_url=rest.url) as cb:
        status, twiml = await post_signed(cb.url, VOICE, voice_form())
        assert status == 200
        call_id, _ = _stream_of(twiml)
        await eventually(lambda: cb.services.registry.get(call_id) is None, 10, "the call ended")
        assert [(r.method, r.form.get("Status")) for r in rest.requests] == [("GET", None), ("POST", "completed")]
        assert rest.calls[CALL_SID].status == "completed"
