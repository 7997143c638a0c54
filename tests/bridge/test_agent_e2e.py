"""The agent's actions end to end: a simulated ACS call -> callbot under uvicorn -> the real Voice Live SDK -> a local
Voice Live protocol server that plays the model's function calls; operator tools are a real HTTP server on 127.0.0.1
declared in a real tools file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from callbot.local.acs.network import PhoneNetwork
from callbot.local.caller.messages import CALLBOT_HUNG_UP
from callbot.local.voicelive.server import VoiceLiveServer
from callbot.local.voicelive.session import ServerSession
from callbot.local.voicelive.tools import FunctionCall
from tests.bridge.test_bridge_e2e import phone_env, place, speechlike
from tests.harness import run_callbot


class ToolServer:
    """An operator's HTTP tool: answers as the test says, records what it got, notices a dropped request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.mode = "ok"
        self.dropped = asyncio.Event()
        self.requested = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        self.headers.append(dict(request.headers))
        self.requested.set()
        if self.mode == "500":
            return web.Response(status=500, text="boom")
        if self.mode == "oversize":
            return web.Response(text="x" * 20000)
        if self.mode in ("slow", "never"):
            try:
                await asyncio.sleep(3.0 if self.mode == "slow" else 60.0)
            except asyncio.CancelledError:
                self.dropped.set()  # the client went away mid-request
                raise
        return web.json_response({"status": "shipped", "order": self.requests[-1]["arguments"].get("order")})


@pytest.fixture
async def tool_server() -> AsyncIterator[ToolServer]:
    server = ToolServer()
    app = web.Application()
    app.router.add_post("/status", server.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}/status"
    yield server
    await runner.cleanup()


def tools_file(tmp_path: Path, url: str, timeout_s: float = 2) -> Path:
    path = tmp_path / "tools.toml"
    path.write_text(f"""
[[tool]]
name = "order_status"
description = "Look up the status of an order by its number."
url = "{url}"
timeout_s = {timeout_s}
parameters = {{ type = "object", properties = {{ order = {{ type = "string" }} }}, required = ["order"] }}
headers = {{ Authorization = "env:ORDERS_TOKEN" }}
""")
    return path


async def ready_session(voicelive: VoiceLiveServer) -> ServerSession:
    session = await voicelive.wait_for_session()
    await session.wait_for("session.update")
    return session


def items_of(session: ServerSession, kind: str) -> list[dict[str, Any]]:
    return [e["item"] for e in session.received
            if e["type"] == "conversation.item.create" and e["item"]["type"] == kind]


async def metrics(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as response:
        return await response.text()


@pytest.mark.parametrize(("mode", "arguments", "expected", "outcome"), [
    ("ok", '{"order": "42"}', {"status": "shipped", "order": "42"}, "ok"),
    ("500", '{"order": "42"}', {"error": "the tool answered HTTP 500"}, "http_error"),
    ("slow", '{"order": "42"}', None, "timeout"),
    ("oversize", '{"order": "42"}', None, "too_large"),
    ("ok", '{"order": 42}', None, "invalid_arguments"),
])
async def test_an_operator_tool_is_called_and_its_output_or_error_reaches_the_model_then_one_response(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, tool_server: ToolServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, mode: str, arguments: str, expected: dict[str, Any] | None,
        outcome: str) -> None:
    monkeypatch.setenv("ORDERS_TOKEN", "Bearer orders-secret-token")
    tool_server.mode = mode
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_tool_hold_ms=0,
                           callbot_tools_file=tools_file(tmp_path, tool_server.url, timeout_s=0.5),
                           **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        session = await ready_session(voicelive)
        update = session.received[0]
        assert [t["name"] for t in update["session"]["tools"]] == ["end_call", "order_status"]
        handle = await session.start_response(audio=b"", items=0, calls=(FunctionCall("order_status", arguments),))
        await handle.wait()
        answer = await session.wait_for("response.create", timeout=10.0)
        output = items_of(session, "function_call_output")
        assert len(output) == 1 and output[0]["call_id"] == handle.calls[0].call_id
        assert session.received.index(answer) > session.received.index(
            next(e for e in session.received if e.get("item", {}).get("type") == "function_call_output"))
        body = json.loads(output[0]["output"])
        if expected is not None:
            assert body == expected
        else:
            assert set(body) == {"error"}
        assert "orders-secret-token" not in output[0]["output"]
        if outcome == "invalid_arguments":
            assert tool_server.requests == [], "arguments that fail the schema never reach the tool"
        else:
            sent = tool_server.requests[0]
            assert sent["name"] == "order_status" and sent["arguments"] == json.loads(arguments)
            assert sent["call"]["caller"] == "+14255550123" and sent["call"]["id"]
            assert tool_server.headers[0]["Authorization"] == "Bearer orders-secret-token"
        await call.hang_up()
        await asyncio.sleep(0.3)
        text = await metrics(cb.url)
        assert f'callbot_tool_results_total{{outcome="{outcome}",tool="order_status"}} 1' in text
        assert f'callbot_tool_latency_seconds_count{{outcome="{outcome}",transport="acs"}} 1' in text


async def test_a_tool_that_never_answers_is_cancelled_when_the_caller_hangs_up(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, tool_server: ToolServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_TOKEN", "t")
    tool_server.mode = "never"
    async with run_callbot(azure_voicelive_endpoint=voicelive.url,
                           callbot_tools_file=tools_file(tmp_path, tool_server.url, timeout_s=30),
                           **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        session = await ready_session(voicelive)
        await session.start_response(audio=b"", items=0, calls=(FunctionCall("order_status", '{"order": "1"}'),))
        async with asyncio.timeout(10):
            await tool_server.requested.wait()
        await call.hang_up()
        async with asyncio.timeout(5):
            await tool_server.dropped.wait()
        assert items_of(session, "function_call_output") == []
        async with asyncio.timeout(5):
            await cb.services.registry.wait_idle()


async def test_a_slow_tool_gets_the_holding_line_and_a_barge_in_meanwhile_keeps_its_result(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, tool_server: ToolServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_TOKEN", "t")
    tool_server.mode = "slow"  # 3 s
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_tool_hold_ms=500,
                           callbot_tool_hold_message="One moment please.",
                           callbot_tools_file=tools_file(tmp_path, tool_server.url, timeout_s=10),
                           **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        session = await ready_session(voicelive)
        handle = await session.start_response(audio=b"", items=0,
                                              calls=(FunctionCall("order_status", '{"order": "7"}'),))
        await handle.wait()
        hold = await session.wait_for("response.create", timeout=5.0)
        assert hold["response"]["pre_generated_assistant_message"]["content"][0]["text"] == "One moment please."
        await session.speech_started()  # the caller talks over the holding line: it is cancelled
        await session.responses[-1].wait()
        answer = await session.start_response(audio=speechlike(1500), chunk_ms=100, realtime_factor=1.0)
        await asyncio.sleep(0.2)
        await answer.wait(timeout=10.0)
        await session.wait_for("conversation.item.create", timeout=10.0)
        output = items_of(session, "function_call_output")
        assert json.loads(output[0]["output"])["status"] == "shipped", "the result survives the barge-in"
        creates = [e for e in session.received if e["type"] == "response.create"]
        assert creates[-1] == {"type": "response.create"}
        await call.hang_up()


async def test_end_call_plays_the_rest_of_the_sentence_then_hangs_up(
        phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        session = await ready_session(voicelive)
        goodbye = speechlike(1200, seed=3)
        handle = await session.start_response(text="Goodbye!", audio=goodbye, chunk_ms=100,
                                              calls=(FunctionCall("end_call", "{}"),))
        await handle.wait(timeout=10.0)  # generated (faster than real time), still playing at the phone
        await call.wait_for_audio(frames=5)
        await session.speech_started()  # too late: the agent is hanging up
        async with asyncio.timeout(10):
            await call.ended.wait()
        assert call.end_reason == CALLBOT_HUNG_UP
        heard = b"".join(r.audio for r in call.received if r.kind == "AudioData")
        assert heard[: len(goodbye)] == goodbye, "the whole sentence is heard"
        assert "StopAudio" not in call.kinds()
        await asyncio.sleep(0.3)
        assert "callbot_agent_hangups_total 1" in await metrics(cb.url)


async def test_a_reconnect_after_a_tool_call_restores_the_call_and_its_output(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, tool_server: ToolServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_TOKEN", "t")
    async with run_callbot(azure_voicelive_endpoint=voicelive.url,
                           callbot_tools_file=tools_file(tmp_path, tool_server.url), **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        session = await ready_session(voicelive)
        handle = await session.start_response(audio=b"", items=0,
                                              calls=(FunctionCall("order_status", '{"order": "9"}'),))
        await session.wait_for("response.create", timeout=10.0)
        await session.abort()
        second = await voicelive.wait_for_session(1, timeout=10.0)
        await second.wait_for("session.update")
        restored = [e["item"] for e in second.received if e["type"] == "conversation.item.create"]
        call_id = handle.calls[0].call_id
        assert {"type": "function_call", "call_id": call_id, "name": "order_status",
                "arguments": '{"order": "9"}'} in restored
        outputs = [i for i in restored if i["type"] == "function_call_output"]
        assert outputs and outputs[0]["call_id"] == call_id and "shipped" in outputs[0]["output"]
        await call.hang_up()


TARGET = "+14255550100"


async def test_the_model_transfers_the_caller_the_handover_line_plays_then_acs_takes_the_call_and_it_stays_up(
        phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_transfer_target=TARGET,
                           callbot_transfer_message="Transferring you now.", **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        session = await ready_session(voicelive)
        assert [t["name"] for t in session.received[0]["session"]["tools"]] == ["end_call", "transfer_to_human"]
        await session.start_response(audio=b"", items=0, calls=(
            FunctionCall("transfer_to_human", '{"reason": "the caller asked for a person"}'),))
        line = await session.wait_for("response.create", timeout=10.0)
        assert line["response"]["pre_generated_assistant_message"]["content"][0]["text"] == "Transferring you now."
        request = await phone.acs.wait_for("transfer", timeout=15.0)
        assert request.body["targetParticipant"]["rawId"] == f"4:{TARGET}"
        frames_before = sum(1 for r in call.received if r.kind == "AudioData")
        assert frames_before * 20 >= len("Transferring you now.") * 60 - 40, "the line played before the transfer"
        async with asyncio.timeout(10):
            await call.ended.wait()
        assert call.end_reason == f"transferred to {TARGET}"
        assert [r for r in phone.acs.requests if r.kind in ("terminate", "hangup")] == [], "never hung up"
        async with asyncio.timeout(5):
            await cb.services.registry.wait_idle()
        text = await metrics(cb.url)
        assert "callbot_transfers_accepted_total 1" in text
        assert items_of(session, "function_call_output") == [], "the model is not asked to go on"


async def test_a_failed_transfer_is_told_to_the_model_which_carries_on_with_the_caller(
        phone: PhoneNetwork, voicelive: VoiceLiveServer) -> None:
    phone.acs.fail_transfers_to.add(TARGET)
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_transfer_target=TARGET,
                           callbot_transfer_message="", **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        session = await ready_session(voicelive)
        handle = await session.start_response(audio=b"", items=0, calls=(FunctionCall("transfer_to_human", "{}"),))
        await session.wait_for("conversation.item.create", timeout=15.0)
        output = items_of(session, "function_call_output")
        assert output[0]["call_id"] == handle.calls[0].call_id
        assert json.loads(output[0]["output"])["error"].startswith("the transfer failed: ")
        await session.wait_for("response.create", timeout=5.0)
        assert not call.ended.is_set(), "the call goes on"
        await call.hang_up()
        text = await metrics(cb.url)
        assert "callbot_transfers_failed_total 1" in text


async def test_mcp_servers_reach_voice_live_with_their_headers_and_approvals_are_answered_from_the_file(
        phone: PhoneNetwork, voicelive: VoiceLiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KB_TOKEN", "Bearer kb-token-value")
    path = tmp_path / "tools.toml"
    path.write_text('[[mcp]]\nserver_label = "kb"\nserver_url = "https://kb.example.com/mcp"\n'
                    'allowed_tools = ["search"]\nrequire_approval = "always"\n'
                    'headers = { Authorization = "env:KB_TOKEN" }\n')
    async with run_callbot(azure_voicelive_endpoint=voicelive.url, callbot_tools_file=path,
                           **phone_env(phone)) as cb:
        call = await place(phone, cb.url)
        session = await ready_session(voicelive)
        (mcp,) = [t for t in session.received[0]["session"]["tools"] if t["type"] == "mcp"]
        assert mcp["server_label"] == "kb" and mcp["headers"] == {"Authorization": "Bearer kb-token-value"}
        for request_id, name in (("mcpr_1", "search"), ("mcpr_2", "delete_everything")):
            await session.send({"type": "response.output_item.done", "response_id": "resp_x", "output_index": 0,
                                "item": {"type": "mcp_approval_request", "id": request_id, "server_label": "kb",
                                         "name": name, "arguments": "{}"}})
        await session.wait_for("conversation.item.create", count=2, timeout=10.0)  # the two answers
        answers = {i["approval_request_id"]: i["approve"] for i in items_of(session, "mcp_approval_response")}
        assert answers == {"mcpr_1": True, "mcpr_2": False}
        await call.hang_up()
