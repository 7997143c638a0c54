"""What the local ACS stand-in sends: Event Grid events and Call Automation callbacks (CloudEvents), shaped like
Microsoft's documentation of them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from callbot.local.acs.server import AnsweredCall

API_VERSION = "2026-03-12"
EVENT_PREFIX = "Microsoft.Communication."
_OK_MESSAGE = "Action completed successfully."
_STREAMING_STATUS = MappingProxyType({"MediaStreamingStarted": ("mediaStreamingStarted", "subscriptionStarted"),
                     "MediaStreamingStopped": ("mediaStreamingStopped", "subscriptionStopped"),
                     "MediaStreamingFailed": ("mediaStreamingFailed", "streamConnectionUnsuccessful")})


def subscription_validation_event(validation_code: str | None = None) -> dict[str, Any]:
    """An Event Grid `SubscriptionValidationEvent` (Event Grid schema), as Event Grid sends it."""
    code = validation_code or str(uuid.uuid4()).upper()
    return {"id": str(uuid.uuid4()), "topic": "/subscriptions/00000000-0000-0000-0000-000000000000",
            "subject": "", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": datetime.now(UTC).isoformat(), "metadataVersion": "1", "dataVersion": "2",
            "data": {"validationCode": code, "validationUrl": None}}


def callback_event(event_type: str, call_connection_id: str, call: AnsweredCall | None,
                   data: Mapping[str, Any] | None = None, *, result_code: int | None = None,
                   result_sub_code: int = 0, result_message: str | None = None) -> dict[str, Any]:
    """One CloudEvent shaped like ACS's callbacks (``event_type``: ``CallConnected`` or the full type)."""
    full = event_type if "." in event_type else EVENT_PREFIX + event_type
    name = full.rsplit(".", 1)[-1]
    failed = name.endswith("Failed")
    payload: dict[str, Any] = {
        "version": API_VERSION,
        "operationContext": call.operation_context if call else None,
        "resultInformation": {
            "code": result_code if result_code is not None else (500 if failed else 200),
            "subCode": result_sub_code,
            "message": result_message or ("Action failed." if failed else _OK_MESSAGE),
        },
        "callConnectionId": call_connection_id,
        "serverCallId": call.server_call_id if call else None,
        "correlationId": call.correlation_id if call else None,
        "publicEventType": full,
    }
    if name in _STREAMING_STATUS:
        status, details = _STREAMING_STATUS[name]
        payload["mediaStreamingUpdate"] = {"contentType": "Audio", "mediaStreamingStatus": status,
                                           "mediaStreamingStatusDetails": details}
    payload.update(data or {})
    subject = f"calling/callConnections/{call_connection_id}"
    return {"id": str(uuid.uuid4()), "source": subject, "type": full, "data": payload,
            "time": datetime.now(UTC).isoformat(), "specversion": "1.0",
            "datacontenttype": "application/json", "subject": subject}

