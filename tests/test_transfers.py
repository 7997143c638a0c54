"""Transfer to a human, the ACS side, end to end: the real app under uvicorn transfers a live call through the real
SDK to the local ACS stand-in (HMAC checked), which answers with the outcome callbacks (ACS-signed) that callbot routes
to the call's bridge; a transferred call is never hung up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from callbot.bridge.actions import TransferError
from callbot.calls import Call
from callbot.local.acs.network import PhoneCall, PhoneNetwork
from callbot.local.voicelive.server import VoiceLiveServer
from callbot.transfers import hang_up_scope
from tests.harness import WEBHOOK_SECRET, Running, run_callbot
from tests.test_app_calls import call_id_of, eventually, metrics, phone_env

TARGET = "+14255550100"
CALLER = "+14255550123"


class Outcomes:
    """Stands in for the bridge's `transfer_outcome(accepted, detail)` (the bridge side is not this module's)."""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, str]] = []

    def transfer_outcome(self, accepted: bool, detail: str) -> None:
        self.seen.append((accepted, detail))


@asynccontextmanager
async def transferable_call(phone: PhoneNetwork, voicelive: VoiceLiveServer, **settings: Any
                            ) -> AsyncIterator[tuple[Running, PhoneCall, Call, Outcomes]]:
    options = {"callbot_transfer_target": TARGET, **settings}
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone), **options) as cb:
        phoned = await phone.place_call(cb.url, WEBHOOK_SECRET, caller=CALLER)
        call = cb.services.registry.get(call_id_of(phoned.answered))
        assert call is not None
        outcomes = Outcomes()
        call.bridge.transfer_outcome = outcomes.transfer_outcome
        yield cb, phoned, call, outcomes


def hang_ups(phone: PhoneNetwork) -> list[str]:
    return [r.path for r in phone.acs.requests if r.kind in ("terminate", "hangup")]


async def test_an_accepted_transfer_reaches_the_bridge_ends_the_call_as_transferred_and_never_hangs_up(
        phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    async with transferable_call(phone, voicelive) as (cb, phoned, call, outcomes):
        await cb.services.transfer(call, "asked for a person")

        request = await phone.acs.wait_for("transfer")
        assert request.body["targetParticipant"]["rawId"] == f"4:{TARGET}"
        assert request.body["sourceCallerIdNumber"] == {"value": CALLER}, "the person sees who is calling"
        assert request.body["operationContext"] == f"transfer:{call.call_id}"
        await eventually(lambda: outcomes.seen == [(True, "")], 10, "the accepted outcome at the bridge")
        await eventually(lambda: call.done.is_set(), 10, "the call released")
        assert call.end_reason == "transferred" and call.transfer == "accepted"
        assert phoned.transferred_to == TARGET and phoned.end_reason == f"transferred to {TARGET}"

        await cb.services.hang_up(call, "late hang-up")  # e.g. the drain or the call timer, after the transfer
        assert hang_ups(phone) == [], "callbot never hangs up a transferred call"
        counted = await metrics(cb)
        assert counted["callbot_transfers_requested_total"] == 1
        assert counted["callbot_transfers_accepted_total"] == 1
        assert counted["callbot_acs_event_CallTransferAccepted_total"] == 1
        assert "callbot_transfers_failed_total" not in counted


async def test_a_failed_transfer_tells_the_bridge_why_and_the_call_goes_on(
        phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    phone.acs.fail_transfers_to.add(TARGET)
    async with transferable_call(phone, voicelive) as (cb, phoned, call, outcomes):
        await cb.services.transfer(call, "")

        await eventually(lambda: outcomes.seen != [], 10, "the failed outcome at the bridge")
        assert outcomes.seen == [(False, "The transfer target did not answer. (code 480/0)")]
        assert not call.ended and not phoned.ended.is_set() and call.transfer == "failed"
        counted = await metrics(cb)
        assert counted["callbot_transfers_failed_total"] == 1
        assert counted["callbot_acs_event_CallTransferFailed_total"] == 1

        await cb.services.hang_up(call, "caller done")
        assert len(hang_ups(phone)) == 1, "a call whose transfer failed is still callbot's to hang up"


async def test_a_refused_transfer_request_raises_transfer_error_and_the_call_goes_on(
        phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    phone.acs.fail_next("transfer", 403)
    async with transferable_call(phone, voicelive) as (cb, phoned, call, outcomes):
        with pytest.raises(TransferError, match=r"the phone system refused the transfer \(HTTP 403\)"):
            await cb.services.transfer(call, "please")
        assert not call.ended and outcomes.seen == [] and call.transfer == "failed"
        assert (await metrics(cb))["callbot_transfers_failed_total"] == 1
        assert hang_ups(phone) == []


async def test_without_a_target_a_transfer_is_refused_without_asking_acs(
        phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    async with transferable_call(phone, voicelive, callbot_transfer_target=None) as (cb, _, call, _outcomes):
        with pytest.raises(TransferError, match="not available"):
            await cb.services.transfer(call, "")
        assert [r for r in phone.acs.requests if r.kind == "transfer"] == []


def test_a_call_with_a_transfer_under_way_may_only_leave_and_a_transferred_one_not_at_all() -> None:
    call = Call("c", 0.0)
    assert hang_up_scope(call) is True
    call.transfer = "requested"
    assert hang_up_scope(call) is False
    call.transfer = "accepted"
    assert hang_up_scope(call) is None
    call.transfer = "failed"
    assert hang_up_scope(call) is True
