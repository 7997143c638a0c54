"""`CALLBOT_TRANSFER_TARGET` parsing: E.164 numbers and the raw ids ACS can transfer to become the SDK's identifiers;
anything else is one clear error that never repeats the value."""

from __future__ import annotations

import pytest
from azure.communication.callautomation import (
    CommunicationUserIdentifier,
    MicrosoftTeamsAppIdentifier,
    MicrosoftTeamsUserIdentifier,
    PhoneNumberIdentifier,
)

from callbot.acs.targets import caller_phone_number, describe, is_phone_number, parse_target


@pytest.mark.parametrize("value", ["+14255550123", " +14255550123 ", "4:+14255550123"])
def test_an_e164_number_becomes_a_phone_number_identifier(value: str) -> None:
    target = parse_target(value)
    assert isinstance(target, PhoneNumberIdentifier) and is_phone_number(target)
    assert target.properties["value"] == "+14255550123" and target.raw_id == "4:+14255550123"


@pytest.mark.parametrize(("value", "kind"), [
    ("8:acs:2e5b3c7a-0000-4000-8000-000000000001_00000020-1234-5678-9abc-def012345678", CommunicationUserIdentifier),
    ("8:spool:abc", CommunicationUserIdentifier),
    ("8:orgid:45ab2481-1c1c-4005-be24-0ffb879b1130", MicrosoftTeamsUserIdentifier),
    ("28:orgid:00000000-0000-4000-8000-00000000a11e", MicrosoftTeamsAppIdentifier),
])
def test_raw_ids_become_the_sdks_identifier_of_their_kind(value: str, kind: type) -> None:
    target = parse_target(value)
    assert isinstance(target, kind) and target.raw_id == value and not is_phone_number(target)


@pytest.mark.parametrize(("value", "problem"), [
    ("", "empty"),
    ("14255550199", "must be an E.164 phone number"),
    ("+1 425 555 0123", "not an E.164"),
    ("+0123456789", "not an E.164"),
    ("+12345", "not an E.164"),
    ("+1234567890123456", "not an E.164"),
    ("4:0123", "not an E.164"),
    ("8:acs:", "must be an E.164"),
    ("8:acs:a b", "must be an E.164"),
    ("sip:agent@example.com", "must be an E.164"),
    ("99:whatever:thing", "not a raw id ACS can transfer to"),
    ("8:teamsvisitor:abc", "anonymous Teams visitor"),
])
def test_anything_else_is_a_clear_value_error_without_the_value(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        parse_target(value)
    if len(value) >= 10:  # shorter ones are prefixes the message names as examples ("8:acs:...")
        assert value not in str(caught.value)


def test_the_caller_is_a_phone_number_only_when_they_called_from_the_phone_network() -> None:
    number = caller_phone_number("4:+14255550199")
    assert number is not None and number.properties["value"] == "+14255550199"
    assert caller_phone_number("8:acs:resource_user") is None
    assert caller_phone_number("4:anonymous") is None
    assert caller_phone_number(None) is None


def test_a_target_is_described_for_logs_masked_or_by_kind() -> None:
    assert describe(parse_target("+14255550123")) == "+1***0123"
    assert describe(parse_target("8:acs:resource_user-id-long")).startswith("communication_user 8:acs:")
