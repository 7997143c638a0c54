"""Where a call can be transferred: `CALLBOT_TRANSFER_TARGET` as the ACS SDK's identifier.

Accepted forms:

* an E.164 phone number, ``+14255550123`` (also the raw id form ``4:+14255550123``): `PhoneNumberIdentifier`;
* an ACS user raw id, ``8:acs:<resource id>_<user id>`` (also ``8:dod-acs:``, ``8:gcch-acs:``, ``8:spool:``):
  `CommunicationUserIdentifier` (or, for an ACS id of a Teams Phone extension, `TeamsExtensionUserIdentifier`);
* a Microsoft Teams user, ``8:orgid:<AAD object id>`` (``8:dod:``, ``8:gcch:``): `MicrosoftTeamsUserIdentifier`;
* a Teams app (a Teams voice application: auto attendant, call queue), ``28:orgid:<app id>`` (``28:dod:``,
  ``28:gcch:``): `MicrosoftTeamsAppIdentifier`.

The raw ids are read by the SDK's own `identifier_from_raw_id`. Refused: anything the SDK does not recognise
(`UnknownIdentifier`), anonymous Teams visitors (``8:teamsvisitor:``: a guest of one meeting, nobody to call), and
phone numbers that are not E.164 (no ``+``, a leading 0 after it, fewer than 7 or more than 15 digits).
"""

from __future__ import annotations

import re

from azure.communication.callautomation import (
    CommunicationIdentifier,
    CommunicationIdentifierKind,
    MicrosoftTeamsUserIdentifier,
    PhoneNumberIdentifier,
)

# the SDK's parser of raw ids; public in azure-communication-identity, the same function in callautomation's copy
from azure.communication.callautomation._shared.models import identifier_from_raw_id

from callbot.acs.events import mask_phone_number

E164 = re.compile(r"\+[1-9][0-9]{6,14}")
PHONE_PREFIX = "4:"
_FORMS = "an E.164 phone number (+14255550123) or an ACS raw id (8:acs:..., 8:orgid:..., 28:orgid:...)"
_CALLABLE_KINDS = frozenset({
    CommunicationIdentifierKind.PHONE_NUMBER,
    CommunicationIdentifierKind.COMMUNICATION_USER,
    CommunicationIdentifierKind.MICROSOFT_TEAMS_USER,
    CommunicationIdentifierKind.MICROSOFT_TEAMS_APP,
    CommunicationIdentifierKind.TEAMS_EXTENSION_USER,
})


def parse_target(value: str) -> CommunicationIdentifier:
    """The transfer target ``value`` as an SDK identifier; ``ValueError`` (naming the accepted forms, never the
    value: it may be a person's number) when it is none of them."""
    text = value.strip()
    if not text:
        raise ValueError(f"the transfer target is empty: expected {_FORMS}")
    number = text.removeprefix(PHONE_PREFIX)
    if number.startswith("+") or text.startswith(PHONE_PREFIX):
        if not E164.fullmatch(number):
            raise ValueError("the transfer target is not an E.164 phone number: '+', the country code, then 6 to "
                             "14 more digits, no spaces (+14255550123)")
        return PhoneNumberIdentifier(number)
    segments = text.split(":", 2)
    if len(segments) < 3 or not segments[2] or any(c.isspace() for c in text):
        raise ValueError(f"the transfer target must be {_FORMS}")
    identifier = identifier_from_raw_id(text)
    if identifier.kind not in _CALLABLE_KINDS:
        raise ValueError(f"the transfer target is not a raw id ACS can transfer to: expected {_FORMS}")
    if isinstance(identifier, MicrosoftTeamsUserIdentifier) and identifier.properties.get("is_anonymous"):
        raise ValueError("the transfer target is an anonymous Teams visitor (8:teamsvisitor:): nobody to call")
    return identifier


def is_phone_number(identifier: CommunicationIdentifier) -> bool:
    return identifier.kind == CommunicationIdentifierKind.PHONE_NUMBER


def caller_phone_number(raw_id: str | None) -> PhoneNumberIdentifier | None:
    """The caller as a phone number when they called from the phone network (raw id ``4:+<E.164>``), else None."""
    if not raw_id or not raw_id.startswith(PHONE_PREFIX):
        return None
    number = raw_id.removeprefix(PHONE_PREFIX)
    return PhoneNumberIdentifier(number) if E164.fullmatch(number) else None


def describe(identifier: CommunicationIdentifier) -> str:
    """A short, loggable name of a target: a phone number masked like callers' (``+1***0123``), a raw id by its
    kind and first characters."""
    if is_phone_number(identifier):
        return mask_phone_number(str(identifier.properties["value"]))
    return f"{identifier.kind.value} {identifier.raw_id[:12]}..."
