"""Calling an operator HTTP tool: the model's arguments checked against the tool's schema, then one `POST`.

The request body is `{"name", "arguments", "call": {"id", "caller", "correlation_id"}}`; a 2xx answer's body (at
most `MAX_OUTPUT_BYTES`) is the function output as is; anything else gives the model `{"error": "<short reason>"}`.
No output or log line carries a header value, the URL's userinfo or query, or an exception's text; arguments and
outputs (personal data) are logged at DEBUG only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import aiohttp
from jsonschema.exceptions import best_match
from referencing.exceptions import Unresolvable

from callbot.tools.model import HttpTool

log = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 16 * 1024
MAX_ERROR_CHARS = 200
Outcome = Literal["ok", "invalid_arguments", "timeout", "http_error", "too_large", "unreachable",
                  "bad_arguments_json"]


@dataclass(frozen=True)
class CallInfo:
    """The phone call a tool call belongs to, as sent to the tool."""

    id: str
    caller: str
    correlation_id: str | None


@dataclass(frozen=True)
class ToolOutcome:
    """`output` is the `function_call_output` string for the model; `outcome` names what happened (metrics)."""

    output: str
    outcome: Outcome
    latency_s: float


def _error(reason: str) -> str:
    return json.dumps({"error": reason})


class ToolRunner:
    """Calls HTTP tools for every call of the process over one `aiohttp.ClientSession` (no cookies kept)."""

    def __init__(self) -> None:
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ToolRunner:
        self._http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def call(self, tool: HttpTool, arguments_json: str, call: CallInfo) -> ToolOutcome:
        """Run one function call; never raises but `asyncio.CancelledError` (the request is then abandoned and its
        connection closed)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        log.debug("call %s: tool %s called with %s", call.id, tool.name, arguments_json)
        output, outcome = await self._run(tool, arguments_json, call)
        latency = loop.time() - started
        log.info("call %s: tool %s: %s in %.0f ms", call.id, tool.name, outcome, latency * 1000)
        log.debug("call %s: tool %s output %s", call.id, tool.name, output)
        return ToolOutcome(output=output, outcome=outcome, latency_s=latency)

    async def _run(self, tool: HttpTool, arguments_json: str, call: CallInfo) -> tuple[str, Outcome]:
        try:
            arguments = json.loads(arguments_json)
        except (ValueError, TypeError):
            return _error("the arguments are not valid JSON"), "bad_arguments_json"
        problem = _schema_problem(tool, arguments)
        if problem is not None:
            return _error(f"invalid arguments: {problem}"), "invalid_arguments"
        if self._http is None:
            raise RuntimeError("ToolRunner used outside `async with`")
        body = {"name": tool.name, "arguments": arguments,
                "call": {"id": call.id, "caller": call.caller, "correlation_id": call.correlation_id}}
        try:
            async with self._http.post(tool.url, json=body, headers=dict(tool.headers), allow_redirects=False,
                                       timeout=aiohttp.ClientTimeout(total=tool.timeout_s)) as resp:
                if not 200 <= resp.status < 300:
                    return _error(f"the tool answered HTTP {resp.status}"), "http_error"
                data = await _read_capped(resp.content, MAX_OUTPUT_BYTES + 1)
        except TimeoutError:
            return _error(f"the tool did not answer within {tool.timeout_s:g} s"), "timeout"
        except (aiohttp.ClientConnectionError, ValueError):  # refused, reset, DNS, TLS, a URL aiohttp refuses:
            return _error("the tool could not be reached"), "unreachable"  # the text may name the URL: not shown
        except aiohttp.ClientError:  # a malformed answer (bad chunking, wrong length, bad encoding)
            return _error("the tool's answer could not be read"), "http_error"
        if len(data) > MAX_OUTPUT_BYTES:
            return _error(f"the tool's answer is larger than {MAX_OUTPUT_BYTES // 1024} KiB"), "too_large"
        return data.decode("utf-8", errors="replace"), "ok"


def _schema_problem(tool: HttpTool, arguments: Any) -> str | None:
    """The most relevant schema error as a short phrase, or None when the arguments are valid."""
    try:
        error = best_match(tool.validator.iter_errors(arguments))
    except Unresolvable:  # a $ref that points nowhere (jsonschema fetches nothing remote)
        return "the tool's parameter schema has a reference that cannot be resolved"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    message = " ".join(error.message.split())
    text = f"{where}: {message}" if where else message
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


async def _read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """At most `limit` bytes of `stream`: stops reading as soon as that many arrived."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
