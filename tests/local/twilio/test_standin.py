"""The Twilio stand-in: the voice webhook it signs, the TwiML it follows, the REST API it serves (with the real
twilio package as the client)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import aiohttp
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from callbot.local.caller.messages import CALLBOT_HUNG_UP, CALLER_HUNG_UP, PhoneError
from callbot.local.twilio import TwilioNetwork, TwilioRefused
from callbot.local.twilio.messages import sid
from callbot.local.twilio.twiml import TwimlError, parse_twiml
from tests.local.twilio.peer import TwilioPeer, running_peer

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
async def peer() -> AsyncIterator[TwilioPeer]:
    async with running_peer(TOKEN) as running:
        yield running


@pytest.fixture
async def network() -> AsyncIterator[TwilioNetwork]:
    async with TwilioNetwork(auth_token=TOKEN) as net:
        yield net


@pytest.fixture
async def client(network: TwilioNetwork) -> AsyncIterator[Client]:
    http = AsyncTwilioHttpClient()
    twilio = Client(network.account_sid, TOKEN, http_client=http)
    twilio.api.base_url = network.rest.url
    yield twilio
    await http.close()


# -- the voice webhook ---------------------------------------------------------------------------------------------


async def test_voice_webhook_carries_twilios_form_and_a_signature_request_validator_accepts(
        peer: TwilioPeer, network: TwilioNetwork) -> None:  # fmt: skip
    call = await network.place_call(peer.url, caller="+14255550111")
    form, valid = peer.webhooks[0]
    assert valid
    assert form["CallSid"] == call.call_sid and form["CallSid"].startswith("CA") and len(form["CallSid"]) == 34
    assert form["AccountSid"] == network.account_sid
    assert (form["From"], form["To"], form["CallStatus"], form["Direction"], form["ApiVersion"]) == (
        "+14255550111", network.number, "ringing", "inbound", "2010-04-01")
    url, _, signature = network.webhooks[0]
    assert RequestValidator(TOKEN).validate(url, form, signature)
    assert not RequestValidator("f" * 32).validate(url, form, signature)  # another account's token: no


async def test_the_webhook_is_signed_for_the_public_url_when_one_is_given(
        peer: TwilioPeer, network: TwilioNetwork) -> None:  # fmt: skip
    with pytest.raises(PhoneError, match="HTTP 403"):  # the peer checks the URL it was called at
        await network.place_call(peer.url, public_url="https://callbot.example.com")
    url, form, signature = network.webhooks[0]
    assert url == "https://callbot.example.com/api/twilio/voice"
    assert RequestValidator(TOKEN).validate(url, form, signature)
    assert network.rest.calls[form["CallSid"]].status == "failed"


async def test_stream_twiml_opens_the_socket_with_connected_then_start_with_the_parameters(
        peer: TwilioPeer, network: TwilioNetwork) -> None:  # fmt: skip
    call = await network.place_call(peer.url)
    stream = await peer.next_stream()
    connected = await stream.next()
    start = await stream.next()
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    assert start["streamSid"] == call.stream_sid and call.stream_sid.startswith("MZ")
    assert start["start"] == {
        "accountSid": network.account_sid, "streamSid": call.stream_sid, "callSid": call.call_sid,
        "tracks": ["inbound"], "customParameters": {"token": "t0k", "caller": "x"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}
    assert stream.call_id == call.call_sid
    assert "dropped" not in str(call.ws._response.url)  # Twilio drops the Stream URL's query string
    signature = peer.handshake_headers[0]["X-Twilio-Signature"]
    assert RequestValidator(TOKEN).validate(f"{peer.url.replace('http', 'ws')}/ws/twilio/{call.call_sid}", {},
                                            signature)  # fmt: skip
    assert network.rest.calls[call.call_sid].status == "in-progress"


@pytest.mark.parametrize(("twiml", "reason", "status"), [
    ('<Response><Reject reason="busy"/></Response>', "busy", "busy"),
    ("<Response><Reject/></Response>", "rejected", "no-answer"),
])
async def test_reject_twiml_refuses_the_call_and_keeps_the_reason(
        peer: TwilioPeer, network: TwilioNetwork, twiml: str, reason: str, status: str) -> None:  # fmt: skip
    peer.twiml = twiml
    with pytest.raises(TwilioRefused) as refused:
        await network.place_call(peer.url)
    assert refused.value.reason == reason
    call_sid, kept = network.rejected[0]
    assert kept == reason and network.rest.calls[call_sid].status == status
    assert peer.streams.empty()


async def test_twiml_that_cannot_be_followed_is_a_clear_failure(peer: TwilioPeer, network: TwilioNetwork) -> None:
    peer.twiml = "<html>not twiml</html>"
    with pytest.raises(PhoneError, match="TwiML cannot be followed: the root element is <html>"):
        await network.place_call(peer.url)


def test_twiml_parsing() -> None:
    stream = parse_twiml('<?xml version="1.0"?><Response><Say>hi</Say><Connect><Stream url="wss://h/ws/twilio/1?a=b">'
                         '<Parameter name="token" value="v"/></Stream></Connect></Response>')  # fmt: skip
    assert (stream.verb, stream.url, stream.parameters, stream.dropped_query) == (
        "stream", "wss://h/ws/twilio/1", {"token": "v"}, "a=b")
    assert parse_twiml("<Response><Dial>+14255550100</Dial></Response>").target == "+14255550100"
    assert parse_twiml("<Response><Dial><Number> +14255550100 </Number></Dial></Response>").target == "+14255550100"
    assert parse_twiml("<Response><Hangup/></Response>").verb == "hangup"
    assert parse_twiml("<Response><Say>bye</Say></Response>").verb == "hangup"  # TwiML ran out: Twilio hangs up
    for bad in ("<Response><Reject reason='later'/></Response>", "<Response><Connect/></Response>",
                '<Response><Connect><Stream url="https://h/x"/></Connect></Response>', "<Response><Dial/></Response>",
                "<Response>", "<Response><Gather/></Response>"):  # fmt: skip
        with pytest.raises(TwimlError):
            parse_twiml(bad)


# -- the REST API ----------------------------------------------------------------------------------------------------


async def test_rest_refuses_wrong_or_missing_credentials_with_twilios_401(
        peer: TwilioPeer, network: TwilioNetwork) -> None:  # fmt: skip
    call = await network.place_call(peer.url)
    wrong_http = AsyncTwilioHttpClient()
    wrong = Client(network.account_sid, "f" * 32, http_client=wrong_http)
    wrong.api.base_url = network.rest.url
    with pytest.raises(TwilioRestException) as refused:
        await wrong.calls(call.call_sid).update_async(status="completed")
    await wrong_http.close()
    assert (refused.value.status, refused.value.code) == (401, 20003)
    url = f"{network.rest.url}/2010-04-01/Accounts/{network.account_sid}/Calls/{call.call_sid}.json"
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Basic !!!"}, {"Authorization": "Bearer " + TOKEN},
                        {"Authorization": "Basic " + base64.b64encode(f"{sid('AC')}:{TOKEN}".encode()).decode()}):
            async with http.post(url, data={"Status": "completed"}, headers=headers) as response:
                assert response.status == 401
                assert await response.json() == {"code": 20003, "message": "Authenticate", "status": 401,
                                                 "more_info": "https://www.twilio.com/docs/errors/20003"}
    assert not call.ended.is_set()
    assert [r.authorized for r in network.rest.requests] == [False] * 5
    assert all(TOKEN not in str(r) for r in network.rest.requests)
    await call.hang_up()


async def test_status_completed_hangs_up_the_stream_gets_stop_and_closes(
        peer: TwilioPeer, network: TwilioNetwork, client: Client) -> None:  # fmt: skip
    call = await network.place_call(peer.url)
    stream = await peer.next_stream()
    updated = await client.calls(call.call_sid).update_async(status="completed")
    assert (updated.sid, updated.status) == (call.call_sid, "completed")
    stop = await stream.next("stop")
    assert stop["stop"] == {"accountSid": network.account_sid, "callSid": call.call_sid}
    assert stop["streamSid"] == call.stream_sid
    await asyncio.wait_for(stream.closed.wait(), 10)
    assert call.end_reason == CALLBOT_HUNG_UP and call.transferred_to is None
    fetched = await client.calls(call.call_sid).fetch_async()
    assert fetched.status == "completed"
    again = await client.calls(call.call_sid).update_async(status="completed")  # an ended call stays ended
    assert again.status == "completed"


async def test_dial_twiml_redirects_the_call_away_from_the_stream(
        peer: TwilioPeer, network: TwilioNetwork, client: Client) -> None:  # fmt: skip
    call = await network.place_call(peer.url)
    stream = await peer.next_stream()
    await client.calls(call.call_sid).update_async(twiml="<Response><Dial>+14255550100</Dial></Response>")
    await stream.next("stop")
    await asyncio.wait_for(stream.closed.wait(), 10)
    assert call.transferred_to == "+14255550100" and call.end_reason == "transferred to +14255550100"
    with pytest.raises(TwilioRestException) as late:  # no second redirect of an ended call
        await client.calls(call.call_sid).update_async(twiml="<Response><Dial>+14255550101</Dial></Response>")
    assert (late.value.status, late.value.code) == (400, 21220)
    assert network.rest.requests[0].form == {"Twiml": "<Response><Dial>+14255550100</Dial></Response>"}


async def test_rest_answers_404_for_another_account_or_an_unknown_call_and_400_for_bad_updates(
        peer: TwilioPeer, network: TwilioNetwork, client: Client) -> None:  # fmt: skip
    call = await network.place_call(peer.url)
    with pytest.raises(TwilioRestException) as unknown:
        await client.calls(sid("CA")).update_async(status="completed")
    assert (unknown.value.status, unknown.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException) as bad:
        await client.calls(call.call_sid).update_async(status="ringing")
    assert (bad.value.status, bad.value.code) == (400, 21218)
    with pytest.raises(TwilioRestException) as unparsable:
        await client.calls(call.call_sid).update_async(twiml="<Response><Dial>")
    assert (unparsable.value.status, unparsable.value.code) == (400, 12100)
    assert not call.ended.is_set()
    await call.hang_up()
    assert call.end_reason == CALLER_HUNG_UP
    assert network.rest.calls[call.call_sid].status == "completed"
