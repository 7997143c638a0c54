"""`CallControl.transfer` drives the real async SDK's `transfer_call_to_participant` against the local ACS stand-in
(real HMAC signing, real HTTP), and the stand-in answers as ACS does: 202, then the outcome as callbacks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from callbot.acs.control import CallControl, CallControlError
from callbot.acs.events import parse_callback_events
from callbot.acs.targets import caller_phone_number, parse_target
from callbot.local.acs.server import AcsServer
from tests.acs.test_control import TRANSPORT, control_for

FAILING = "+14255550999"


class Callbacks:
    """Where the stand-in posts its callbacks: a real HTTP endpoint keeping each event with its Authorization."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[tuple[dict[str, Any], str | None]] = asyncio.Queue()
        self.url = ""

    async def receive(self, request: web.Request) -> web.Response:
        for event in json.loads(await request.read()):
            self.events.put_nowait((event, request.headers.get("Authorization")))
        return web.Response(status=200)

    async def next(self) -> tuple[dict[str, Any], str | None]:
        async with asyncio.timeout(10):
            return await self.events.get()


@pytest.fixture
async def callbacks() -> AsyncIterator[Callbacks]:
    sink = Callbacks()
    app = web.Application()
    app.router.add_post("/api/callbacks/call-1", sink.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sink.url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/callbacks/call-1"
    yield sink
    await runner.cleanup()


@pytest.fixture
async def acs() -> AsyncIterator[AcsServer]:
    async with AcsServer(fail_transfers_to={FAILING}) as server:
        server.authorize = lambda: "Bearer acs-signed"
        yield server


@pytest.fixture
async def control(acs: AcsServer) -> AsyncIterator[CallControl]:
    async with control_for(acs.connection_string) as call_control:
        yield call_control


async def answered(control: CallControl, acs: AcsServer, callbacks: Callbacks) -> str:
    context = acs.incoming_call_event(caller="+14255550123")["data"]["incomingCallContext"]
    return await control.answer(context, callback_url=callbacks.url, transport_url=TRANSPORT,
                                media_format="pcm24k", operation_context="call-1")


async def test_a_transfer_to_a_number_sends_the_target_and_the_callers_number_and_is_accepted(
        control: CallControl, acs: AcsServer, callbacks: Callbacks) -> None:
    connection_id = await answered(control, acs, callbacks)
    await control.transfer(connection_id, parse_target("+14255550100"), operation_context="transfer:call-1",
                           source_caller_id=caller_phone_number("4:+14255550123"))

    request = await acs.wait_for("transfer")
    assert request.status == 202 and request.authorized
    assert request.headers["Authorization"].startswith("HMAC-SHA256 ")
    assert request.body["targetParticipant"]["rawId"] == "4:+14255550100"
    assert request.body["targetParticipant"]["phoneNumber"] == {"value": "+14255550100"}
    assert request.body["sourceCallerIdNumber"] == {"value": "+14255550123"}
    assert request.body["operationContext"] == "transfer:call-1"
    [transfer] = acs.transfers
    assert transfer.target_label == "+14255550100" and transfer.source_caller_id == "+14255550123"

    event, authorization = await callbacks.next()
    assert authorization == "Bearer acs-signed"
    [parsed] = parse_callback_events(json.dumps([event]))
    assert parsed.name == "CallTransferAccepted" and parsed.operation_context == "transfer:call-1"
    assert parsed.call_connection_id == connection_id and parsed.result_code == 200
    assert parsed.data["transferTarget"]["rawId"] == "4:+14255550100"
    assert parsed.data["transferee"]["rawId"] == "4:+14255550123"
    event, _ = await callbacks.next()
    assert event["type"] == "Microsoft.Communication.CallDisconnected"
    assert await control.get_state(connection_id) is None, "the application's leg is gone after the transfer"
    assert await control.hang_up(connection_id) is False


async def test_a_transfer_to_an_acs_user_sends_its_raw_id_and_no_caller_id(
        control: CallControl, acs: AcsServer, callbacks: Callbacks) -> None:
    connection_id = await answered(control, acs, callbacks)
    target = "8:acs:00000000-0000-4000-8000-000000000001_0000002a-0000-0000-0000-000000000000"
    await control.transfer(connection_id, parse_target(target), operation_context="t")

    request = await acs.wait_for("transfer")
    assert request.body["targetParticipant"]["rawId"] == target
    assert request.body["targetParticipant"]["communicationUser"] == {"id": target}
    assert "sourceCallerIdNumber" not in request.body
    event, _ = await callbacks.next()
    assert event["type"].endswith("CallTransferAccepted")


async def test_a_target_that_does_not_answer_gives_call_transfer_failed_and_the_call_stays(
        control: CallControl, acs: AcsServer, callbacks: Callbacks) -> None:
    connection_id = await answered(control, acs, callbacks)
    await control.transfer(connection_id, parse_target(FAILING), operation_context="transfer:call-1")

    event, _ = await callbacks.next()
    [parsed] = parse_callback_events(json.dumps([event]))
    assert parsed.name == "CallTransferFailed" and parsed.operation_context == "transfer:call-1"
    assert parsed.result_code == 480 and parsed.result_message == "The transfer target did not answer."
    assert await control.get_state(connection_id) == "connecting", "a failed transfer leaves the call up"
    assert callbacks.events.empty()


async def test_a_refused_transfer_request_raises_call_control_error_with_the_status(
        control: CallControl, acs: AcsServer, callbacks: Callbacks) -> None:
    connection_id = await answered(control, acs, callbacks)
    acs.fail_next("transfer", 403)
    with pytest.raises(CallControlError, match="ACS transfer failed: HTTP 403") as caught:
        await control.transfer(connection_id, parse_target("+14255550100"), operation_context="t")
    assert caught.value.status == 403
    assert acs.transfers == [] and callbacks.events.empty()


async def test_a_transfer_of_an_unknown_call_raises_not_found(control: CallControl, acs: AcsServer) -> None:
    with pytest.raises(CallControlError, match="HTTP 404"):
        await control.transfer("no-such-call", parse_target("+14255550100"), operation_context="t")
