"""One call's view of the operator's tools: the bridge's `ToolHost` over the process's tools file and HTTP runner."""

from __future__ import annotations

from typing import Any

from callbot.bridge.tools import ToolResult
from callbot.tools.model import ToolsFile
from callbot.tools.runner import CallInfo, ToolRunner


class CallTools:
    def __init__(self, tools: ToolsFile, runner: ToolRunner, call: CallInfo) -> None:
        self.tools, self.runner, self.call_info = tools, runner, call

    def definitions(self) -> list[dict[str, Any]]:
        return self.tools.session_tools()

    def approves(self, server_label: str, tool_name: str) -> bool:
        return self.tools.approves(server_label, tool_name)

    def has(self, name: str) -> bool:
        return self.tools.tool(name) is not None

    async def call(self, name: str, arguments: str) -> ToolResult:
        tool = self.tools.tool(name)
        if tool is None:
            return ToolResult('{"error": "there is no such tool"}', "unknown_tool")
        outcome = await self.runner.call(tool, arguments, self.call_info)
        return ToolResult(outcome.output, outcome.outcome, outcome.latency_s)
