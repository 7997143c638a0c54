"""Tool definitions as Voice Live takes them (checked with the SDK's own models); secrets never in a repr."""

from __future__ import annotations

from pathlib import Path

from azure.ai.voicelive.models import FunctionTool, MCPServer, RequestSession

from callbot.tools import HttpTool, McpServer, ToolsFile, load_tools_file, safe_url
from tests.tools.test_load import ENV, EXAMPLE, write


def test_session_tools_are_a_function_and_an_mcp_tool_in_the_sdk_s_shape(tmp_path: Path) -> None:
    tools = load_tools_file(write(tmp_path, EXAMPLE), ENV)
    function, mcp = tools.session_tools()
    assert function == {"type": "function", "name": "order_status",
                        "description": "Look up the status of an order by its number.",
                        "parameters": {"type": "object", "properties": {"order": {"type": "string"}},
                                       "required": ["order"]}}
    assert mcp == {"type": "mcp", "server_label": "kb", "server_url": "https://kb.example.com/mcp",
                   "allowed_tools": ["search"], "headers": {"Authorization": "Bearer kb-secret-value"},
                   "require_approval": "never"}
    # keyword construction refuses any field name the SDK's model does not know, and keeps every value
    assert FunctionTool(**{k: v for k, v in function.items() if k != "type"}).as_dict() == function
    assert MCPServer(**{k: v for k, v in mcp.items() if k != "type"}).as_dict() == mcp
    session = RequestSession(tools=[FunctionTool(function), MCPServer(mcp)])
    assert session.as_dict()["tools"] == [function, mcp]


def test_per_tool_approval_is_passed_in_the_sdk_s_dict_form() -> None:
    server = McpServer(server_label="b", server_url="https://b.example.com/mcp",
                       require_approval={"always": ("delete",), "never": ("search",)})
    definition = server.definition()
    assert definition["require_approval"] == {"always": ["delete"], "never": ["search"]}
    assert "allowed_tools" not in definition and "headers" not in definition
    assert MCPServer(**{k: v for k, v in definition.items() if k != "type"}).as_dict() == definition


def test_a_definition_is_a_copy_the_caller_may_change() -> None:
    tool = HttpTool(name="t", description="d", url="https://x.example", parameters={"type": "object",
                                                                                    "properties": {}})
    tool.definition()["parameters"]["properties"]["added"] = {}
    assert dict(tool.parameters["properties"]) == {}


def test_reprs_and_redacted_definitions_never_show_header_values_or_url_secrets(tmp_path: Path) -> None:
    tool = HttpTool(name="t", description="d", url="https://user:pw-secret@x.example/p?key=q-secret#f",
                    headers={"X-Api-Key": "header-secret"})
    server = McpServer(server_label="kb", server_url="https://kb.example.com/mcp?code=q-secret",
                       headers={"X-Api-Key": "header-secret"})
    tools = ToolsFile(path=tmp_path / "t.toml", tools=(tool,), mcp=(server,))
    for text in (repr(tool), str(tool), repr(server), str(tools), repr(tool.headers), str(tools.session_tools(
            redacted=True))):
        assert "secret" not in text, text
    assert "X-Api-Key" in repr(tool.headers)
    assert "https://x.example/p" in repr(tool)
    assert tools.session_tools(redacted=True)[1]["headers"] == {"X-Api-Key": "<redacted>"}
    assert tools.session_tools()[1]["headers"] == {"X-Api-Key": "header-secret"}  # what Voice Live needs


def test_safe_url_keeps_scheme_host_port_and_path_only() -> None:
    assert safe_url("https://u:p@h.example:8443/a/b?token=x#y") == "https://h.example:8443/a/b"
    assert safe_url("http://[::1]:9/x") == "http://[::1]:9/x"
    assert safe_url("https://h.example:99999/") == "<unparsable URL>"


def test_approval_requests_are_answered_from_the_file(tmp_path: Path) -> None:
    tools = ToolsFile(path=tmp_path / "t.toml", mcp=(
        McpServer(server_label="kb", server_url="https://kb.example.com/mcp", allowed_tools=("search",),
                  require_approval="always"),
        McpServer(server_label="open", server_url="https://open.example.com/mcp"),
    ))
    assert tools.approves("kb", "search")
    assert not tools.approves("kb", "delete_everything")  # not in allowed_tools
    assert tools.approves("open", "anything")  # no allowed_tools: every tool of the server
    assert not tools.approves("unknown", "search")  # a server the file does not declare
