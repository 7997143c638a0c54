"""The ACS stand-in's transferToParticipant body checks and the identifiers it writes in events (over HTTP:
tests/acs/test_control_transfer.py)."""

from __future__ import annotations

from typing import Any

import pytest

from callbot.local.acs.request_checks import accepted_data, identifier_model, parse_transfer


@pytest.mark.parametrize(("body", "problem"), [
    ({}, "targetParticipant is required."),
    ({"targetParticipant": {"rawId": "4:12"}}, "targetParticipant.rawId is not a valid phone number."),
    ({"targetParticipant": {"phoneNumber": {"value": "4255550100"}}}, "must be an E.164 phone number"),
    ({"targetParticipant": {"rawId": "4:+14255550100", "phoneNumber": {"value": "+14255550101"}}},
     "rawId does not match"),
    ({"targetParticipant": {"rawId": "4:+14255550100"}, "sourceCallerIdNumber": {"value": "x"}},
     "sourceCallerIdNumber.value must be an E.164 phone number."),
    ({"targetParticipant": {"rawId": "8:acs:x"}, "operationContext": 5}, "operationContext must be a string."),
])
def test_the_transfer_body_is_validated_like_acs(body: dict[str, Any], problem: str) -> None:
    result = parse_transfer("c", body, "http://127.0.0.1:1/api/callbacks/c", set())
    assert isinstance(result, str) and problem in result


def test_a_valid_body_is_understood_and_failing_targets_are_marked() -> None:
    body = {"targetParticipant": {"rawId": "4:+14255550100", "phoneNumber": {"value": "+14255550100"}},
            "operationContext": "ctx", "operationCallbackUri": "https://cb.example/op"}
    request = parse_transfer("c", body, "https://cb.example/default", {"+14255550100"})
    assert not isinstance(request, str)
    assert request.target == "4:+14255550100" and request.target_phone == "+14255550100"
    assert request.callback_uri == "https://cb.example/op" and request.fails
    assert accepted_data(request, "4:+14255550123") == {
        "transferTarget": identifier_model("4:+14255550100"),
        "transferee": {"kind": "phoneNumber", "rawId": "4:+14255550123", "phoneNumber": {"value": "+14255550123"}}}
