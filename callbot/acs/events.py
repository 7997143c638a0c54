"""Parsing of what ACS and Event Grid POST to the service. Pure functions, no I/O.

Two wire formats arrive:

* The incoming-call webhook (`POST /api/incoming-call`) receives Event Grid *schema* events: always a
  JSON array of ``{"id", "eventType", "subject", "data", "eventTime", "dataVersion", "topic"}``. A single
  object is refused with a message that points at the most likely cause (a subscription configured for the
  CloudEvents schema).
* Mid-call callbacks (`POST /api/callbacks/{call_id}`) receive CloudEvents 1.0: ACS sends a JSON array
  (``application/json`` batch); a single CloudEvent object (structured mode) is also accepted and treated as
  a batch of one, because it is valid CloudEvents and costs nothing to accept.

Both refuse bodies with more than `MAX_EVENTS` events. Every failure is an `EventParseError` with a message
that names the offending index and field; messages never echo field values (they may hold phone numbers or
signed contexts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

MAX_EVENTS = 100
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
INCOMING_CALL_EVENT = "Microsoft.Communication.IncomingCall"
_CALL_CONNECTION_IN_SUBJECT = re.compile(r"callConnections/([^/]+)")


class EventParseError(ValueError):
    """The body is not a well-formed batch of events of the expected schema."""


@dataclass(frozen=True)
class SubscriptionValidation:
    """`Microsoft.EventGrid.SubscriptionValidationEvent`.

    The webhook answers 200 ``{"validationResponse": validation_code}``.
    """

    validation_code: str
    validation_url: str | None
    event_id: str = ""


@dataclass(frozen=True)
class IncomingCall:
    """`Microsoft.Communication.IncomingCall`."""

    incoming_call_context: str
    caller_raw_id: str
    caller_phone: str | None
    caller_display_name: str | None
    to_raw_id: str
    correlation_id: str | None
    server_call_id: str | None
    event_id: str = ""


@dataclass(frozen=True)
class UnknownGridEvent:
    """Any other Event Grid event type (the caller decides whether to ignore it)."""

    event_type: str
    event_id: str = ""


GridEvent = SubscriptionValidation | IncomingCall | UnknownGridEvent


@dataclass(frozen=True)
class CallEvent:
    """One ACS Call Automation callback (a CloudEvent)."""

    type: str  # full, e.g. "Microsoft.Communication.CallConnected"
    name: str  # short, e.g. "CallConnected"
    event_id: str
    call_connection_id: str
    server_call_id: str | None
    correlation_id: str | None
    operation_context: str | None
    result_code: int | None
    result_sub_code: int | None
    result_message: str | None
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)


# Helpers ------------------------------------------------------------------------------------------


def _load(body: bytes | str, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, and a number over the int digits limit
        raise EventParseError(f"{what}: body is not valid JSON ({exc.__class__.__name__})") from None
    except RecursionError:
        raise EventParseError(f"{what}: body is nested too deeply") from None


def _check_count(items: list[Any], what: str) -> None:
    if len(items) > MAX_EVENTS:
        raise EventParseError(f"{what}: {len(items)} events in one body, at most {MAX_EVENTS} are accepted")


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise EventParseError(f"{where} must be a JSON object, not {_kind(value)}")
    return value


def _req_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    if key not in obj or obj[key] is None:
        raise EventParseError(f"{where}: missing required field {key!r}")
    value = obj[key]
    if not isinstance(value, str):
        raise EventParseError(f"{where}: field {key!r} must be a string, not {_kind(value)}")
    if not value:
        raise EventParseError(f"{where}: field {key!r} must not be empty")
    return value


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventParseError(f"{where}: field {key!r} must be a string, not {_kind(value)}")
    return value


def _opt_int(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventParseError(f"{where}: field {key!r} must be an integer, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


# Event Grid ---------------------------------------------------------------------------------------


def parse_event_grid(body: bytes | str) -> list[GridEvent]:
    """Parse an Event Grid webhook body (Event Grid schema). An empty array gives ``[]``."""
    what = "Event Grid body"
    items = _load(body, what)
    if isinstance(items, dict):
        raise EventParseError(
            f"{what} must be a JSON array of Event Grid schema events, got a single object "
            "(is the Event Grid subscription using the CloudEvents schema?)"
        )
    if not isinstance(items, list):
        raise EventParseError(f"{what} must be a JSON array of events, not {_kind(items)}")
    _check_count(items, what)
    return [_grid_event(item, f"event [{index}]") for index, item in enumerate(items)]


def _grid_event(item: Any, where: str) -> GridEvent:
    event = _obj(item, where)
    event_type = _req_str(event, "eventType", where)
    event_id = _req_str(event, "id", where)
    where = f"{where} ({event_type})"
    if event_type == VALIDATION_EVENT:
        data = _obj(event.get("data"), f"{where}: field 'data'")
        return SubscriptionValidation(
            validation_code=_req_str(data, "validationCode", where),
            validation_url=_opt_str(data, "validationUrl", where),
            event_id=event_id,
        )
    if event_type == INCOMING_CALL_EVENT:
        return _incoming_call(_obj(event.get("data"), f"{where}: field 'data'"), where, event_id)
    return UnknownGridEvent(event_type=event_type, event_id=event_id)


def _incoming_call(data: Mapping[str, Any], where: str, event_id: str) -> IncomingCall:
    caller = _obj(data.get("from"), f"{where}: field 'from'")
    callee = _obj(data.get("to"), f"{where}: field 'to'")
    caller_phone: str | None = None
    phone = caller.get("phoneNumber")
    if phone is not None:
        phone_obj = _obj(phone, f"{where}: field 'from.phoneNumber'")
        caller_phone = _opt_str(phone_obj, "value", f"{where} from.phoneNumber")
    display_name = _opt_str(data, "callerDisplayName", where)
    return IncomingCall(
        incoming_call_context=_req_str(data, "incomingCallContext", where),
        caller_raw_id=_req_str(caller, "rawId", f"{where} from"),
        caller_phone=caller_phone or None,
        caller_display_name=display_name or None,
        to_raw_id=_req_str(callee, "rawId", f"{where} to"),
        correlation_id=_opt_str(data, "correlationId", where),
        server_call_id=_opt_str(data, "serverCallId", where),
        event_id=event_id,
    )


# ACS callbacks (CloudEvents) ----------------------------------------------------------------------


def parse_callback_events(body: bytes | str) -> list[CallEvent]:
    """Parse an ACS callback body: a JSON array of CloudEvents (a single CloudEvent object is accepted)."""
    what = "callback body"
    items = _load(body, what)
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise EventParseError(f"{what} must be a JSON array of CloudEvents, not {_kind(items)}")
    _check_count(items, what)
    return [_call_event(item, f"event [{index}]") for index, item in enumerate(items)]


def _call_event(item: Any, where: str) -> CallEvent:
    event = _obj(item, where)
    event_type = _req_str(event, "type", where)
    event_id = _req_str(event, "id", where)
    where = f"{where} ({event_type})"
    data = _obj(event.get("data"), f"{where}: field 'data'")
    call_connection_id = _opt_str(data, "callConnectionId", where)
    if not call_connection_id:
        for key in ("subject", "source"):
            match = _CALL_CONNECTION_IN_SUBJECT.search(_opt_str(event, key, where) or "")
            if match:
                call_connection_id = match.group(1)
                break
    if not call_connection_id:
        raise EventParseError(f"{where}: missing required field 'callConnectionId'")
    code = sub_code = None
    message = None
    result = data.get("resultInformation")
    if result is not None:
        info = _obj(result, f"{where}: field 'resultInformation'")
        code = _opt_int(info, "code", f"{where} resultInformation")
        sub_code = _opt_int(info, "subCode", f"{where} resultInformation")
        message = _opt_str(info, "message", f"{where} resultInformation")
    return CallEvent(
        type=event_type,
        name=event_type.rsplit(".", 1)[-1],
        event_id=event_id,
        call_connection_id=call_connection_id,
        server_call_id=_opt_str(data, "serverCallId", where),
        correlation_id=_opt_str(data, "correlationId", where),
        operation_context=_opt_str(data, "operationContext", where),
        result_code=code,
        result_sub_code=sub_code,
        result_message=message,
        data=MappingProxyType(dict(data)),
    )


# Privacy ------------------------------------------------------------------------------------------

# ITU-T E.164 country calling codes are prefix-free: these are the 1- and 2-digit ones; all others have 3.
_CC1 = frozenset({"1", "7"})
_CC2 = frozenset(
    {"20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47", "48",
     "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65", "66", "81",
     "82", "84", "86", "90", "91", "92", "93", "94", "95", "98"}
)


def mask_phone_number(value: str | None) -> str:
    """Mask a phone number for logs: keep the country code and the last digits, e.g. ``+14255551234`` ->
    ``+1***1234``, ``+447700900123`` -> ``+44***0123``.

    Accepts E.164 (``+...``), ACS raw ids (``4:+...``) and numbers with spaces/dashes. Numbers too short to
    mask meaningfully, and anything that is not a phone number, become ``***``.
    """
    if not value:
        return "***"
    text = value.strip()
    if text.startswith("4:"):
        text = text[2:]
    if not re.fullmatch(r"\+?[0-9 ()./-]+", text):
        return "***"
    digits = re.sub(r"\D", "", text)
    if len(digits) < 6:
        return "***"
    if not text.startswith("+"):
        return f"***{digits[-2:]}"
    if digits[:1] in _CC1:
        country = digits[:1]
    elif digits[:2] in _CC2:
        country = digits[:2]
    else:
        country = digits[:3]
    national = digits[len(country):]
    keep = 4 if len(national) >= 8 else 2
    return f"+{country}***{national[-keep:]}"
