"""Operator tools: HTTP tools and MCP servers declared in a TOML file (`CALLBOT_TOOLS_FILE`).

`load_tools_file` reads and checks the file at start; `ToolsFile.session_tools()` are the `session.update` tools;
`ToolRunner.call` runs one HTTP function call for the model. See README.md, "Operator tools".
"""

from __future__ import annotations

from callbot.tools.load import load_tools_file, read_tools_file
from callbot.tools.model import RESERVED_NAMES, Headers, HttpTool, McpServer, ToolsFile, ToolsFileError, safe_url
from callbot.tools.runner import CallInfo, ToolOutcome, ToolRunner

__all__ = [
    "RESERVED_NAMES", "CallInfo", "Headers", "HttpTool", "McpServer", "ToolOutcome", "ToolRunner", "ToolsFile",
    "ToolsFileError", "load_tools_file", "read_tools_file",
    "safe_url",
]
