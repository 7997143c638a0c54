"""Request bodies the local ACS stand-in checks as ACS does: an answer's ``mediaStreamingOptions``, and
``transferToParticipant``: its body, the recorded request, and the callbacks that tell the outcome.

Wire names are the SDK's generated models' (``TransferToParticipantRequest``: ``targetParticipant``,
``operationContext``, ``operationCallbackUri``, ``transferee``, ``sourceCallerIdNumber``, ``customCallingContext``).
A valid request is answered 202 ``{"operationContext": ...}``; then the outcome goes to ``operationCallbackUri`` (else
the call's callback URL): ``CallTransferAccepted`` (with ``transferTarget`` and ``transferee``) followed by
``CallDisconnected`` for the application's leg, as ACS does, or ``CallTransferFailed`` with `FAILED_RESULT` for a
target the stand-in is told to fail (``AcsServer(fail_transfers_to=...)``). The failure's code is the stand-in's
choice (SIP's 480, "temporarily unavailable": nobody picked up), not a promise of what ACS sends.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

AUDIO_FORMATS = ("pcm16KMono", "pcm24KMono")
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
FAILED_RESULT: Mapping[str, Any] = MappingProxyType({"result_code": 480, "result_sub_code": 0,
                                                     "result_message": "The transfer target did not answer."})
ACCEPTED_MESSAGE = "The transfer completed successfully."
_KINDS = ("phoneNumber", "communicationUser", "microsoftTeamsUser", "microsoftTeamsApp", "teamsExtensionUser")


@dataclass(frozen=True)
class TransferRequest:
    """One accepted (202) transfer request, as the stand-in understood it."""

    call_connection_id: str
    target: str  # the target's rawId
    target_phone: str | None  # targetParticipant.phoneNumber.value, for a phone number
    source_caller_id: str | None  # sourceCallerIdNumber.value: the number the target sees calling
    transferee: str | None  # the transferee's rawId when given
    operation_context: str | None
    callback_uri: str  # where the outcome goes
    body: Mapping[str, Any]  # as received
    fails: bool  # the stand-in answers CallTransferFailed
    at: float  # time.monotonic()

    @property
    def target_label(self) -> str:
        """The target as a person reads it: the phone number, else the raw id."""
        return self.target_phone or self.target


def _identifier(value: Any, name: str) -> tuple[str, str | None] | str:
    """(rawId, phone number or None) of a CommunicationIdentifierModel, or what is wrong with it."""
    if not isinstance(value, dict):
        return f"{name} must be an object."
    typed = [key for key in _KINDS if value.get(key) is not None]
    if len(typed) > 1:
        return f"{name} must have at most one of {', '.join(_KINDS)}."
    raw_id = value.get("rawId")
    if raw_id is not None and (not isinstance(raw_id, str) or not raw_id):
        return f"{name}.rawId must be a non-empty string."
    phone = value.get("phoneNumber")
    if phone is not None:
        number = phone.get("value") if isinstance(phone, dict) else None
        if not isinstance(number, str) or not E164.fullmatch(number):
            return f"{name}.phoneNumber.value must be an E.164 phone number."
        if raw_id is not None and raw_id != f"4:{number}":
            return f"{name}.rawId does not match its phoneNumber."
        return f"4:{number}", number
    if raw_id is None:
        return f"{name} must have a rawId or one of {', '.join(_KINDS)}."
    if raw_id.startswith("4:"):
        number = raw_id[2:]
        return (raw_id, number) if E164.fullmatch(number) else f"{name}.rawId is not a valid phone number."
    return raw_id, None


def parse_transfer(call_connection_id: str, body: Any, default_callback: str,
                   fail_targets: Collection[str]) -> TransferRequest | str:
    """The request, or the 400 message ACS-style validation gives."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if body.get("targetParticipant") is None:
        return "targetParticipant is required."
    target = _identifier(body["targetParticipant"], "targetParticipant")
    if isinstance(target, str):
        return target
    transferee = None
    if body.get("transferee") is not None:
        parsed = _identifier(body["transferee"], "transferee")
        if isinstance(parsed, str):
            return parsed
        transferee = parsed[0]
    source = body.get("sourceCallerIdNumber")
    source_number = None
    if source is not None:
        source_number = source.get("value") if isinstance(source, dict) else None
        if not isinstance(source_number, str) or not E164.fullmatch(source_number):
            return "sourceCallerIdNumber.value must be an E.164 phone number."
    context = body.get("operationContext")
    if context is not None and not isinstance(context, str):
        return "operationContext must be a string."
    callback = body.get("operationCallbackUri")
    if callback is not None and (not isinstance(callback, str) or not callback.startswith(("https://", "http://"))):
        return "operationCallbackUri must be an absolute URL."
    raw_id, phone = target
    return TransferRequest(
        call_connection_id=call_connection_id, target=raw_id, target_phone=phone, source_caller_id=source_number,
        transferee=transferee, operation_context=context, callback_uri=callback or default_callback, body=body,
        fails=raw_id in fail_targets or (phone is not None and phone in fail_targets), at=time.monotonic())


def identifier_model(raw_id: str) -> dict[str, Any]:
    """A CommunicationIdentifierModel as ACS writes it in events."""
    if raw_id.startswith("4:"):
        return {"kind": "phoneNumber", "rawId": raw_id, "phoneNumber": {"value": raw_id[2:]}}
    if raw_id.startswith(("8:acs:", "8:spool:", "8:dod-acs:", "8:gcch-acs:")):
        return {"kind": "communicationUser", "rawId": raw_id, "communicationUser": {"id": raw_id}}
    return {"kind": "unknown", "rawId": raw_id}


def accepted_data(request: TransferRequest, caller_raw_id: str | None) -> dict[str, Any]:
    """The ``data`` fields of CallTransferAccepted beyond the common ones."""
    data: dict[str, Any] = {"transferTarget": identifier_model(request.target)}
    transferee = request.transferee or caller_raw_id
    if transferee:
        data["transferee"] = identifier_model(transferee)
    return data


def schemes(secure: str, require_tls: bool) -> tuple[str, ...]:
    """URL prefixes accepted for ``secure`` (https, wss): also the plain one unless TLS is required."""
    return (f"{secure}://",) if require_tls else (f"{secure}://", f"{secure[:-1]}://")


def check_streaming(options: Any, require_tls: bool) -> str | None:
    """What is wrong with an answer's ``mediaStreamingOptions``, or None."""
    if not isinstance(options, dict):
        return "mediaStreamingOptions must be an object."
    if options.get("transportType") != "websocket":
        return "mediaStreamingOptions.transportType must be 'websocket'."
    if options.get("audioChannelType") not in ("mixed", "unmixed"):
        return "mediaStreamingOptions.audioChannelType must be 'mixed' or 'unmixed'."
    if options.get("audioFormat") not in (None, *AUDIO_FORMATS):
        return f"mediaStreamingOptions.audioFormat must be one of {', '.join(AUDIO_FORMATS)}."
    url = options.get("transportUrl")
    if not isinstance(url, str) or not url.startswith(schemes("wss", require_tls)):
        return "mediaStreamingOptions.transportUrl must be a wss:// URL."
    return None
