"""The HTTP tool runner against a real local tool server (aiohttp on 127.0.0.1, a random port)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

from callbot.tools import CallInfo, HttpTool, ToolRunner
from callbot.tools.runner import MAX_OUTPUT_BYTES

CALL = CallInfo(id="call-7", caller="+14255550100", correlation_id="corr-1")
SCHEMA = {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]}
SECRET = "Bearer header-secret-123"


class ToolServer:
    """A tool server with one route per behaviour; it records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.entered = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.url = ""
        app = web.Application()
        for path, handler in (("/json", self.json), ("/text", self.text), ("/status/{code}", self.status),
                              ("/redirect", self.redirect), ("/hang", self.hang), ("/big", self.big),
                              ("/exact", self.exact), ("/latin1", self.latin1)):
            app.router.add_post(path, handler)
        self.runner = web.AppRunner(app, handler_cancellation=True, access_log=None)  # its log is not callbot's

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def _record(self, request: web.Request) -> None:
        self.requests.append((request.path, dict(request.headers), await request.json()))

    async def json(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"status": "shipped", "order": "42"})

    async def text(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(text="Order 42 left the warehouse today.")

    async def status(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=int(request.match_info["code"]), text="internal details: db password hunter2")

    async def redirect(self, request: web.Request) -> web.Response:
        await self._record(request)
        raise web.HTTPFound(location="/json")

    async def hang(self, request: web.Request) -> web.Response:
        if request.path == "/hang":
            await self._record(request)
        self.entered.set()
        try:
            await asyncio.Event().wait()  # never answers
        except asyncio.CancelledError:  # aiohttp cancels the handler when the client closes the connection
            self.disconnected.set()
            raise
        raise AssertionError("unreachable")

    async def big(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"x" * MAX_OUTPUT_BYTES)
        await response.write(b"x" * MAX_OUTPUT_BYTES)
        await self.hang(request)  # a body that never ends: only a reader that stops at the cap gets an answer
        return response

    async def exact(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(body=b"y" * MAX_OUTPUT_BYTES)

    async def latin1(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(body="café".encode("latin-1"), content_type="text/plain")


@pytest.fixture
async def server() -> AsyncIterator[ToolServer]:
    tools = ToolServer()
    await tools.start()
    yield tools
    await tools.runner.cleanup()


@pytest.fixture
async def runner() -> AsyncIterator[ToolRunner]:
    async with ToolRunner() as tool_runner:
        yield tool_runner


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound here but not listening: connections to it are refused (and no one else can take it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def tool(url: str, **kw: Any) -> HttpTool:
    values: dict[str, Any] = {"name": "order_status", "description": "Order status.", "url": url,
                              "timeout_s": 10.0, "parameters": SCHEMA, "headers": {"Authorization": SECRET}}
    values.update(kw)
    return HttpTool(**values)


async def test_a_json_answer_is_the_output_as_is(server: ToolServer, runner: ToolRunner) -> None:
    result = await runner.call(tool(server.url + "/json"), '{"order": "42"}', CALL)
    assert (result.outcome, json.loads(result.output)) == ("ok", {"status": "shipped", "order": "42"})
    assert result.latency_s >= 0


async def test_a_text_answer_is_the_output_as_is(server: ToolServer, runner: ToolRunner) -> None:
    result = await runner.call(tool(server.url + "/text"), '{"order": "42"}', CALL)
    assert (result.outcome, result.output) == ("ok", "Order 42 left the warehouse today.")


async def test_bytes_that_are_not_utf8_are_replaced(server: ToolServer, runner: ToolRunner) -> None:
    result = await runner.call(tool(server.url + "/latin1"), '{"order": "42"}', CALL)
    assert (result.outcome, result.output) == ("ok", "caf\ufffd")


async def test_the_request_is_a_post_with_the_documented_body_and_the_headers(server: ToolServer,
                                                                             runner: ToolRunner) -> None:
    await runner.call(tool(server.url + "/json", headers={"Authorization": SECRET, "X-Tenant": "north"}),
                      '{"order": "42"}', CALL)
    [(path, headers, body)] = server.requests
    assert path == "/json"
    assert body == {"name": "order_status", "arguments": {"order": "42"},
                    "call": {"id": "call-7", "caller": "+14255550100", "correlation_id": "corr-1"}}
    assert headers["Authorization"] == SECRET and headers["X-Tenant"] == "north"
    assert headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("code", [500, 503, 404])
async def test_a_non_2xx_answer_is_an_error_without_the_body(server: ToolServer, runner: ToolRunner,
                                                             code: int) -> None:
    result = await runner.call(tool(server.url + f"/status/{code}"), '{"order": "42"}', CALL)
    assert result.outcome == "http_error"
    assert json.loads(result.output) == {"error": f"the tool answered HTTP {code}"}


async def test_a_redirect_is_not_followed(server: ToolServer, runner: ToolRunner) -> None:
    result = await runner.call(tool(server.url + "/redirect"), '{"order": "42"}', CALL)
    assert (result.outcome, json.loads(result.output)) == ("http_error", {"error": "the tool answered HTTP 302"})
    assert [path for path, _, _ in server.requests] == ["/redirect"]


async def test_a_tool_slower_than_its_timeout_is_an_error(server: ToolServer, runner: ToolRunner) -> None:
    result = await runner.call(tool(server.url + "/hang", timeout_s=0.2), '{"order": "42"}', CALL)
    assert result.outcome == "timeout"
    assert json.loads(result.output) == {"error": "the tool did not answer within 0.2 s"}
    await asyncio.wait_for(server.disconnected.wait(), 30)  # the abandoned request's connection was closed


async def test_an_answer_over_16_kib_is_too_large(server: ToolServer, runner: ToolRunner) -> None:
    result = await runner.call(tool(server.url + "/big"), '{"order": "42"}', CALL)
    assert result.outcome == "too_large"
    assert json.loads(result.output) == {"error": "the tool's answer is larger than 16 KiB"}
    await asyncio.wait_for(server.disconnected.wait(), 30)  # reading stopped at the cap and the request was closed


async def test_an_answer_of_exactly_16_kib_is_kept_whole(server: ToolServer, runner: ToolRunner) -> None:
    result = await runner.call(tool(server.url + "/exact"), '{"order": "42"}', CALL)
    assert (result.outcome, result.output) == ("ok", "y" * MAX_OUTPUT_BYTES)


@pytest.mark.parametrize(("arguments", "problem"), [
    ('{}', "invalid arguments: 'order' is a required property"),
    ('{"order": 42}', "invalid arguments: order: 42 is not of type 'string'"),
    ('[1, 2]', "invalid arguments: [1, 2] is not of type 'object'"),
])
async def test_arguments_that_fail_the_schema_never_reach_the_tool(server: ToolServer, runner: ToolRunner,
                                                                   arguments: str, problem: str) -> None:
    result = await runner.call(tool(server.url + "/json"), arguments, CALL)
    assert (result.outcome, json.loads(result.output)) == ("invalid_arguments", {"error": problem})
    assert server.requests == []


@pytest.mark.parametrize("arguments", ['{"order": ', "", "not json"])
async def test_arguments_that_are_not_json_never_reach_the_tool(server: ToolServer, runner: ToolRunner,
                                                                arguments: str) -> None:
    result = await runner.call(tool(server.url + "/json"), arguments, CALL)
    assert result.outcome == "bad_arguments_json"
    assert json.loads(result.output) == {"error": "the arguments are not valid JSON"}
    assert server.requests == []


async def test_a_tool_that_cannot_be_reached_is_an_error(runner: ToolRunner, closed_port: int) -> None:
    result = await runner.call(tool(f"http://127.0.0.1:{closed_port}/x"), '{"order": "42"}', CALL)
    assert (result.outcome, json.loads(result.output)) == ("unreachable", {"error": "the tool could not be reached"})


async def test_a_cancelled_call_propagates_and_closes_the_request(server: ToolServer, runner: ToolRunner) -> None:
    task = asyncio.create_task(runner.call(tool(server.url + "/hang"), '{"order": "42"}', CALL))
    await asyncio.wait_for(server.entered.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(server.disconnected.wait(), 30)  # the tool server saw the connection close


async def test_one_info_line_per_call_and_no_secret_in_any_output_or_log(server: ToolServer, runner: ToolRunner,
                                                                        closed_port: int,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    query = "?api_key=query-secret-456"
    outputs = [await runner.call(tool(url + query, timeout_s=0.2), '{"order": "42"}', CALL) for url in (
        server.url + "/json", server.url + "/status/500", server.url + "/redirect", server.url + "/hang",
        server.url + "/big", f"http://127.0.0.1:{closed_port}/x")]
    assert [o.outcome for o in outputs] == ["ok", "http_error", "http_error", "timeout", "too_large", "unreachable"]
    text = "\n".join([o.output for o in outputs] + [r.getMessage() for r in caplog.records])
    for secret in ("header-secret-123", "query-secret-456", "hunter2"):
        assert secret not in text
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and r.name == "callbot.tools.runner"]
    assert len(info) == 6
    assert info[0].startswith("call call-7: tool order_status: ok in ")
    assert info[1].startswith("call call-7: tool order_status: http_error in ")
    assert all("42" not in line.partition(" in ")[0] for line in info)  # arguments: DEBUG only


async def test_arguments_and_output_are_logged_at_debug_only(server: ToolServer, runner: ToolRunner,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await runner.call(tool(server.url + "/text"), '{"order": "private-order-99"}', CALL)
    assert "private-order-99" not in caplog.text and "warehouse" not in caplog.text
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    await runner.call(tool(server.url + "/text"), '{"order": "private-order-99"}', CALL)
    assert "private-order-99" in caplog.text and "warehouse" in caplog.text
