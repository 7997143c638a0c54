"""Running the model's function calls for one call, off the audio path.

The bridge knows the operator's tools only through `ToolHost` (built per call by the service from the tools file and
the process's HTTP tool runner, `callbot.tools`), so the bridge stays free of HTTP and TOML. A tool's failure of any
kind becomes an `{"error": ...}` output for the model; only cancellation (the call ended) propagates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ToolResult:
    output: str  # what the model gets (the tool's answer, or {"error": ...})
    outcome: str  # ok, http_error, timeout, invalid_arguments, ... (callbot.tools), unknown_tool, failed
    latency_s: float = 0.0


class ToolHost(Protocol):
    """The operator's tools as one call sees them."""

    def definitions(self) -> list[dict[str, Any]]:
        """Function tools and MCP servers for `session.update`."""
        ...

    def approves(self, server_label: str, tool_name: str) -> bool:
        """The answer to Voice Live's approval request for an MCP server's tool."""
        ...

    def has(self, name: str) -> bool: ...

    async def call(self, name: str, arguments: str) -> ToolResult:
        """Run the tool `name` with the model's JSON `arguments`; never raises but CancelledError."""
        ...


@dataclass
class ToolStats:
    """Tool calls of one call by (name, outcome), and their latency: counted into /metrics when the call ends."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    latency_s: float = 0.0
    timed: int = 0

    def add(self, name: str, result: ToolResult) -> None:
        self.calls[(name, result.outcome)] += 1
        self.latency_s += result.latency_s
        self.timed += 1


async def run_tool(host: ToolHost | None, call_id: str, name: str, arguments: str) -> ToolResult:
    """One function call of the model; `call_id` is for the log line."""
    if host is None or not host.has(name):
        log.warning("call %s: the model called %r, which is not a tool here", call_id, name[:64])
        return ToolResult('{"error": "there is no such tool"}', "unknown_tool")
    started = time.monotonic()
    try:
        return await host.call(name, arguments)
    except asyncio.CancelledError:
        raise
    except Exception:  # a defect in one tool must not end the call: the model hears that it failed
        log.exception("call %s: tool %s failed", call_id, name)
        return ToolResult('{"error": "the tool failed"}', "failed", time.monotonic() - started)
