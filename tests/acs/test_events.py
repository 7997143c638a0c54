"""Parsing of Event Grid webhook bodies and ACS callback CloudEvents (samples shaped like Microsoft's docs)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from callbot.acs.events import (
    MAX_EVENTS,
    CallEvent,
    EventParseError,
    IncomingCall,
    SubscriptionValidation,
    UnknownGridEvent,
    mask_phone_number,
    parse_callback_events,
    parse_event_grid,
)

CONTEXT = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJjYyI6Ikg0c0lBQUFBQUFBRUFMVlNYVy9UTUJUOSJ9."
CALL_CONNECTION_ID = "421f3500-f5de-4c12-bf61-9e2641433687"


def validation_event() -> dict[str, Any]:
    return {
        "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
        "topic": "/subscriptions/xx/resourceGroups/rg/providers/Microsoft.Communication/communicationServices/acs",
        "subject": "",
        "data": {
            "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
            "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/sub/validate?id=x",
        },
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2024-01-01T00:00:00.0000000Z",
        "metadataVersion": "1",
        "dataVersion": "2",
    }


def incoming_call_event() -> dict[str, Any]:
    return {
        "id": "d5546be8-227a-4db8-b2c3-4f06fd675fd6",
        "topic": "/subscriptions/{subscription-id}/resourcegroups/{group-name}/providers/"
        "microsoft.communication/communicationservices/{communication-services-resource-name}",
        "subject": "/caller/4:+16041234567/recipient/4:+18331234567",
        "data": {
            "to": {"kind": "phoneNumber", "rawId": "4:+18331234567", "phoneNumber": {"value": "+18331234567"}},
            "from": {"kind": "phoneNumber", "rawId": "4:+16041234567", "phoneNumber": {"value": "+16041234567"}},
            "serverCallId": "aHR0cHM6Ly9hcGkuZmxpZ2h0cHJveHkuc2t5cGUuY29tL2FwaS92Mi9jcC9jb252LXVzZWEy",
            "callerDisplayName": "",
            "incomingCallContext": CONTEXT,
            "correlationId": "d5546be8-227a-4db8-b2c3-4f06fd675fd6",
        },
        "eventType": "Microsoft.Communication.IncomingCall",
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "eventTime": "2022-05-24T23:14:37.2013589Z",
    }


def cloud_event(event_type: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    payload = {
        "version": "2024-09-15",
        "operationContext": "call-7",
        "resultInformation": {"code": 200, "subCode": 0, "message": "Action completed successfully."},
        "callConnectionId": CALL_CONNECTION_ID,
        "serverCallId": "aHR0cHM6Ly9hcGkuZmxpZ2h0cHJveHku",
        "correlationId": "c6a4a6a3-1b0e-4a1d-b1c6-5d2b0f5f0c11",
        "publicEventType": f"Microsoft.Communication.{event_type}",
    }
    payload.update(data or {})
    return {
        "id": "91e3b5a3-58a2-4ae0-a3fd-b1ad5e0a5f3a",
        "source": f"calling/callConnections/{CALL_CONNECTION_ID}",
        "type": f"Microsoft.Communication.{event_type}",
        "data": payload,
        "time": "2024-01-01T00:00:00.9876543+00:00",
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "subject": f"calling/callConnections/{CALL_CONNECTION_ID}",
    }


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


# Event Grid -------------------------------------------------------------------------------------------------


def test_subscription_validation_yields_code_and_url() -> None:
    [event] = parse_event_grid(body([validation_event()]))
    assert event == SubscriptionValidation(
        validation_code="512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
        validation_url="https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/sub/validate?id=x",
        event_id="2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
    )


def test_incoming_call_yields_context_caller_and_ids() -> None:
    [event] = parse_event_grid(body([incoming_call_event()]))
    assert isinstance(event, IncomingCall)
    assert event.incoming_call_context == CONTEXT
    assert event.caller_raw_id == "4:+16041234567"
    assert event.caller_phone == "+16041234567"
    assert event.caller_display_name is None  # "" means no name
    assert event.to_raw_id == "4:+18331234567"
    assert event.correlation_id == "d5546be8-227a-4db8-b2c3-4f06fd675fd6"
    assert event.server_call_id == "aHR0cHM6Ly9hcGkuZmxpZ2h0cHJveHkuc2t5cGUuY29tL2FwaS92Mi9jcC9jb252LXVzZWEy"


def test_incoming_call_from_an_acs_user_has_no_phone_number() -> None:
    event = incoming_call_event()
    event["data"]["from"] = {"kind": "communicationUser", "rawId": "8:acs:abc_123",
                             "communicationUser": {"id": "8:acs:abc_123"}}
    event["data"]["callerDisplayName"] = "Alex"
    del event["data"]["serverCallId"]
    [parsed] = parse_event_grid(body([event]))
    assert isinstance(parsed, IncomingCall)
    assert (parsed.caller_raw_id, parsed.caller_phone, parsed.caller_display_name) == ("8:acs:abc_123", None, "Alex")
    assert parsed.server_call_id is None


def test_other_event_types_are_reported_as_unknown_and_batches_keep_order() -> None:
    other = {"id": "1", "eventType": "Microsoft.Communication.CallEnded", "subject": "", "data": {},
             "eventTime": "2024-01-01T00:00:00Z", "dataVersion": "1.0"}
    events = parse_event_grid(body([other, incoming_call_event(), validation_event()]))
    assert events[0] == UnknownGridEvent(event_type="Microsoft.Communication.CallEnded", event_id="1")
    assert [type(e) for e in events] == [UnknownGridEvent, IncomingCall, SubscriptionValidation]


def test_empty_array_is_an_empty_list() -> None:
    assert parse_event_grid(b"[]") == []


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'"text"', "JSON array"),
        (body(incoming_call_event()), "CloudEvents schema"),  # a single object: refused, with the likely cause
        (body([1]), "event [0] must be a JSON object"),
        (body([{"id": "1", "data": {}}]), "missing required field 'eventType'"),
        (body([{"id": "1", "eventType": 5}]), "'eventType' must be a string"),
    ],
)
def test_malformed_event_grid_bodies_are_refused_clearly(raw: bytes, fragment: str) -> None:
    with pytest.raises(EventParseError, match=re.escape(fragment)):
        parse_event_grid(raw)


def test_incoming_call_without_data_is_refused() -> None:
    event = incoming_call_event()
    del event["data"]
    with pytest.raises(EventParseError, match=r"IncomingCall\): field 'data' must be a JSON object"):
        parse_event_grid(body([event]))


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.pop("incomingCallContext"), "missing required field 'incomingCallContext'"),
        (lambda d: d.update(incomingCallContext=42), "'incomingCallContext' must be a string"),
        (lambda d: d.update(incomingCallContext=""), "'incomingCallContext' must not be empty"),
        (lambda d: d.pop("from"), "field 'from' must be a JSON object"),
        (lambda d: d["to"].pop("rawId"), "to: missing required field 'rawId'"),
        (lambda d: d["from"].update(phoneNumber="+1"), "'from.phoneNumber' must be a JSON object"),
        (lambda d: d.update(correlationId=["x"]), "'correlationId' must be a string, not an array"),
    ],
)
def test_incoming_call_with_missing_or_mistyped_fields_is_refused(mutate: Any, fragment: str) -> None:
    event = incoming_call_event()
    mutate(event["data"])
    with pytest.raises(EventParseError, match=re.escape(fragment)):
        parse_event_grid(body([event]))


def test_validation_without_code_is_refused() -> None:
    event = validation_event()
    event["data"] = {"validationUrl": None}
    with pytest.raises(EventParseError, match="validationCode"):
        parse_event_grid(body([event]))


def test_errors_never_echo_field_values() -> None:
    event = incoming_call_event()
    event["data"]["to"]["rawId"] = 12345678
    with pytest.raises(EventParseError) as info:
        parse_event_grid(body([event]))
    assert "12345678" not in str(info.value) and CONTEXT not in str(info.value)


def test_oversized_batches_are_refused() -> None:
    parse_event_grid(body([validation_event()] * MAX_EVENTS))
    with pytest.raises(EventParseError, match=f"at most {MAX_EVENTS}"):
        parse_event_grid(body([validation_event()] * (MAX_EVENTS + 1)))
    with pytest.raises(EventParseError, match=f"at most {MAX_EVENTS}"):
        parse_callback_events(body([cloud_event("CallConnected")] * 10_000))


def test_deeply_nested_json_is_refused_not_crashing() -> None:
    with pytest.raises(EventParseError):
        parse_event_grid(b"[" * 100_000 + b"]" * 100_000)


# ACS callbacks ----------------------------------------------------------------------------------------------


def test_call_connected_callback() -> None:
    [event] = parse_callback_events(body([cloud_event("CallConnected")]))
    assert event == CallEvent(
        type="Microsoft.Communication.CallConnected", name="CallConnected",
        event_id="91e3b5a3-58a2-4ae0-a3fd-b1ad5e0a5f3a", call_connection_id=CALL_CONNECTION_ID,
        server_call_id="aHR0cHM6Ly9hcGkuZmxpZ2h0cHJveHku", correlation_id="c6a4a6a3-1b0e-4a1d-b1c6-5d2b0f5f0c11",
        operation_context="call-7", result_code=200, result_sub_code=0,
        result_message="Action completed successfully.",
    )
    assert event.data["publicEventType"] == "Microsoft.Communication.CallConnected"


def test_call_disconnected_and_media_streaming_events_keep_their_data() -> None:
    started = {"mediaStreamingUpdate": {"contentType": "Audio", "mediaStreamingStatus": "mediaStreamingStarted",
                                        "mediaStreamingStatusDetails": "subscriptionStarted"}}
    failed = {
        "resultInformation": {"code": 500, "subCode": 8581, "message": "Media streaming failed."},
        "mediaStreamingUpdate": {"contentType": "Audio", "mediaStreamingStatus": "mediaStreamingFailed",
                                 "mediaStreamingStatusDetails": "streamConnectionUnsuccessful"},
    }
    events = parse_callback_events(body([
        cloud_event("MediaStreamingStarted", started),
        cloud_event("MediaStreamingFailed", failed),
        cloud_event("CallDisconnected", {"operationContext": None}),
    ]))
    assert [e.name for e in events] == ["MediaStreamingStarted", "MediaStreamingFailed", "CallDisconnected"]
    assert events[0].data["mediaStreamingUpdate"]["mediaStreamingStatus"] == "mediaStreamingStarted"
    assert (events[1].result_code, events[1].result_sub_code, events[1].result_message) == (
        500, 8581, "Media streaming failed.")
    assert events[1].data["mediaStreamingUpdate"]["mediaStreamingStatusDetails"] == "streamConnectionUnsuccessful"
    assert events[2].operation_context is None


def test_single_cloud_event_object_is_accepted_as_a_batch_of_one() -> None:
    [event] = parse_callback_events(body(cloud_event("CallConnected")))
    assert event.name == "CallConnected"


def test_call_connection_id_falls_back_to_the_subject() -> None:
    event = cloud_event("CallConnected")
    del event["data"]["callConnectionId"]
    del event["data"]["resultInformation"]
    [parsed] = parse_callback_events(body([event]))
    assert parsed.call_connection_id == CALL_CONNECTION_ID
    assert (parsed.result_code, parsed.result_sub_code, parsed.result_message) == (None, None, None)


def test_event_data_cannot_be_mutated() -> None:
    [event] = parse_callback_events(body([cloud_event("CallConnected")]))
    with pytest.raises(TypeError):
        event.data["callConnectionId"] = "other"  # type: ignore[index]


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        ({"id": "1", "source": "x", "data": {}}, "missing required field 'type'"),
        ({"id": "1", "type": "Microsoft.Communication.CallConnected"}, "field 'data' must be a JSON object"),
        ({"id": "1", "type": "T", "data": {"callConnectionId": 7}}, "'callConnectionId' must be a string"),
        ({"id": "1", "type": "T", "data": {}}, "missing required field 'callConnectionId'"),
        ({"id": "1", "type": "T", "data": {"callConnectionId": "c", "resultInformation": "ok"}},
         "'resultInformation' must be a JSON object"),
        ({"id": "1", "type": "T", "data": {"callConnectionId": "c", "resultInformation": {"code": "200"}}},
         "'code' must be an integer, not a string"),
        ({"id": "1", "type": "T", "data": {"callConnectionId": "c", "resultInformation": {"code": True}}},
         "'code' must be an integer, not a boolean"),
    ],
)
def test_malformed_callback_events_are_refused(event: dict[str, Any], fragment: str) -> None:
    with pytest.raises(EventParseError, match=re.escape(fragment)):
        parse_callback_events(body([event]))


@pytest.mark.parametrize(("raw", "fragment"), [(b"{", "not valid JSON"), (b"3", "JSON array"), (b"[null]", "object")])
def test_malformed_callback_bodies_are_refused(raw: bytes, fragment: str) -> None:
    with pytest.raises(EventParseError, match=fragment):
        parse_callback_events(raw)


# Masking ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+14255551234", "+1***1234"),
        ("4:+14255551234", "+1***1234"),
        ("+44 7700 900123", "+44***0123"),
        ("+353861234567", "+353***4567"),
        ("+4930123456", "+49***3456"),
        ("+3531234", "+353***34"),
        ("4255551234", "***34"),
        ("+123", "***"),
        ("", "***"),
        (None, "***"),
        ("8:acs:abc_123", "***"),
        ("anonymous", "***"),
    ],
)
def test_phone_numbers_are_masked_for_logs(number: str | None, masked: str) -> None:
    assert mask_phone_number(number) == masked
