"""`CallControl` drives the real async ACS SDK against the local ACS stand-in (real HMAC signing, real HTTP)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.identity.aio import DefaultAzureCredential

from callbot.acs.control import CallControl, CallControlError, ConfigError, parse_connection_string
from callbot.config import load_settings
from callbot.local.acs.server import AcsServer

CALLBACK = "https://bot.example.com/api/callbacks/call-1?token=abc"
TRANSPORT = "wss://bot.example.com/ws/media/call-1?token=abc"


@pytest.fixture
async def acs() -> AsyncIterator[AcsServer]:
    async with AcsServer() as server:
        yield server


def control_for(connection_string: str, **client_options: Any) -> CallControl:
    settings = load_settings(acs_connection_string=connection_string, acs_endpoint=None)
    return CallControl.from_settings(settings, **client_options)


@pytest.fixture
async def control(acs: AcsServer) -> AsyncIterator[CallControl]:
    async with control_for(acs.connection_string) as call_control:
        yield call_control


async def answer(control: CallControl, acs: AcsServer, media_format: Any = "pcm24k") -> str:
    context = acs.incoming_call_event()["data"]["incomingCallContext"]
    return await control.answer(context, callback_url=CALLBACK, transport_url=TRANSPORT,
                                media_format=media_format, operation_context="call-1")


async def test_answer_sends_bidirectional_streaming_options_and_returns_the_connection_id(
        control: CallControl, acs: AcsServer) -> None:
    event = acs.incoming_call_event()
    context = event["data"]["incomingCallContext"]
    call_connection_id = await control.answer(context, callback_url=CALLBACK, transport_url=TRANSPORT,
                                              media_format="pcm24k", operation_context="call-1")

    request = await acs.wait_for("answer")
    assert request.status == 200 and request.authorized
    assert request.headers["Authorization"].startswith("HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256")
    assert request.body == {
        "incomingCallContext": context,
        "callbackUri": CALLBACK,
        "operationContext": "call-1",
        "mediaStreamingOptions": {
            "transportUrl": TRANSPORT,
            "transportType": "websocket",
            "contentType": "audio",
            "audioChannelType": "mixed",
            "startMediaStreaming": True,
            "enableBidirectional": True,
            "audioFormat": "pcm24KMono",
            "enableDtmfTones": True,
        },
    }
    call = acs.calls[call_connection_id]
    assert call.server_call_id == event["data"]["serverCallId"]
    assert call.correlation_id == event["data"]["correlationId"]
    assert await control.get_state(call_connection_id) == "connecting"


async def test_answer_in_pcm16k_asks_for_16k_mono(control: CallControl, acs: AcsServer) -> None:
    await answer(control, acs, "pcm16k")
    assert (await acs.wait_for("answer")).body["mediaStreamingOptions"]["audioFormat"] == "pcm16KMono"


async def test_reject_sends_the_reason(control: CallControl, acs: AcsServer) -> None:
    await control.reject("context-1")
    await control.reject("context-2", reason="forbidden")
    assert acs.rejected == [("context-1", "busy"), ("context-2", "forbidden")]
    assert (await acs.wait_for("reject")).status == 204


async def test_hang_up_twice_tolerates_a_call_that_already_ended(control: CallControl, acs: AcsServer) -> None:
    call_connection_id = await answer(control, acs)
    assert await control.hang_up(call_connection_id) is True
    assert await control.hang_up(call_connection_id) is False
    first, second = await acs.wait_for("terminate"), await acs.wait_for("terminate")
    assert first.path == f"/calling/callConnections/{call_connection_id}:terminate" and first.status == 204
    assert second.status == 404
    assert acs.states[call_connection_id] == "disconnected"
    assert await control.get_state(call_connection_id) is None


async def test_hang_up_just_for_the_bot_deletes_the_connection(control: CallControl, acs: AcsServer) -> None:
    call_connection_id = await answer(control, acs)
    assert await control.hang_up(call_connection_id, for_everyone=False) is True
    request = await acs.wait_for("hangup")
    assert (request.method, request.path, request.status) == (
        "DELETE", f"/calling/callConnections/{call_connection_id}", 204)
    assert await control.hang_up("no-such-call", for_everyone=False) is False


async def test_a_transient_server_error_is_retried_without_answering_twice(
        control: CallControl, acs: AcsServer) -> None:
    acs.fail_next("answer", 500)
    call_connection_id = await answer(control, acs)
    failed, succeeded = await acs.wait_for("answer"), await acs.wait_for("answer")
    assert (failed.status, succeeded.status) == (500, 200)
    assert failed.headers["Repeatability-Request-ID"] == succeeded.headers["Repeatability-Request-ID"]
    assert list(acs.calls) == [call_connection_id]


async def test_a_refused_answer_raises_with_the_status(control: CallControl, acs: AcsServer) -> None:
    acs.fail_next("answer", 403)
    with pytest.raises(CallControlError, match="HTTP 403") as info:
        await answer(control, acs)
    assert info.value.status == 403
    assert acs.calls == {}


async def test_hang_up_failure_other_than_not_found_raises(control: CallControl, acs: AcsServer) -> None:
    call_connection_id = await answer(control, acs)
    acs.fail_next("terminate", 400)
    with pytest.raises(CallControlError, match="hang up failed: HTTP 400") as info:
        await control.hang_up(call_connection_id)
    assert info.value.status == 400


async def test_a_wrong_key_is_rejected_by_the_signature_check(acs: AcsServer) -> None:
    wrong_key = base64.b64encode(secrets.token_bytes(32)).decode()
    async with control_for(f"endpoint={acs.url}/;accesskey={wrong_key}") as control:
        with pytest.raises(CallControlError) as info:
            await answer(control, acs)
    assert info.value.status == 401 and info.value.code == "7509"
    assert wrong_key not in str(info.value)
    [request] = acs.requests
    assert not request.authorized and request.error is not None and "signature does not match" in request.error
    assert acs.calls == {}


async def test_a_body_changed_after_signing_fails_the_content_hash(acs: AcsServer) -> None:
    def tamper(pipeline_request: Any) -> None:  # runs after the SDK's HMAC policy has signed the request
        http_request = pipeline_request.http_request
        http_request.body = http_request.body.replace("pcm24KMono", "pcm16KMono")

    async with control_for(acs.connection_string, raw_request_hook=tamper) as control:
        with pytest.raises(CallControlError) as info:
            await answer(control, acs)
    assert info.value.status == 401
    [request] = acs.requests
    assert request.body["mediaStreamingOptions"]["audioFormat"] == "pcm16KMono"  # the tampered body arrived
    assert request.error is not None and "x-ms-content-sha256 does not match" in request.error


async def test_an_unreachable_service_raises_call_control_error(acs: AcsServer) -> None:
    connection_string = acs.connection_string
    await acs.stop()
    async with control_for(connection_string, retry_total=0) as control:
        with pytest.raises(CallControlError, match="no response") as info:
            await answer(control, acs)
    assert info.value.status is None


def test_connection_string_keeps_an_http_endpoint_and_strips_the_slash() -> None:
    assert parse_connection_string("endpoint=http://127.0.0.1:8080/;accesskey=QUJD") == (
        "http://127.0.0.1:8080", "QUJD")
    assert parse_connection_string("Endpoint=https://acs.communication.azure.com/;AccessKey=a2V5PQ==") == (
        "https://acs.communication.azure.com", "a2V5PQ==")
    assert parse_connection_string("endpoint=acs.communication.azure.com;accesskey=QUJD")[0] == (
        "https://acs.communication.azure.com")


@pytest.mark.parametrize(
    "connection_string",
    ["endpoint=https://acs.communication.azure.com/", "accesskey=c2VjcmV0LWtleQ==",
     "endpoint=https://acs.communication.azure.com/;accesskey=not base64 secret!",
     "endpoint=ftp://acs/;accesskey=c2VjcmV0LWtleQ==", "garbage"],
)
def test_malformed_connection_strings_raise_config_error_without_the_key(connection_string: str) -> None:
    with pytest.raises(ConfigError) as info:
        control_for(connection_string)
    assert "secret" not in str(info.value) and "c2VjcmV0LWtleQ" not in str(info.value)


def test_missing_acs_settings_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="ACS_CONNECTION_STRING .* or ACS_ENDPOINT"):
        CallControl.from_settings(load_settings(acs_connection_string=None, acs_endpoint=None))


async def test_acs_endpoint_uses_the_async_default_azure_credential() -> None:
    settings = load_settings(acs_connection_string=None, acs_endpoint="https://acs.communication.azure.com/")
    control = CallControl.from_settings(settings)
    assert isinstance(control._credential, DefaultAzureCredential)
    await control.close()
