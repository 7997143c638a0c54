"""The tools file: the documented example loads; each kind of mistake is one line naming the file, table, problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from callbot.tools import HttpTool, McpServer, ToolsFileError, load_tools_file

EXAMPLE = '''
[[tool]]
name = "order_status"                    # ^[a-zA-Z0-9_-]{1,64}$
description = "Look up the status of an order by its number."
url = "https://orders.example.com/api/status"   # https, or http only to localhost / 127.0.0.1
timeout_s = 5                            # default 5, at most 30
parameters = { type = "object", properties = { order = { type = "string" } }, required = ["order"] }
headers = { Authorization = "env:ORDERS_TOKEN" }   # "env:NAME" reads the secret from the environment

[[mcp]]
server_label = "kb"
server_url = "https://kb.example.com/mcp"
allowed_tools = ["search"]
headers = { Authorization = "env:KB_TOKEN" }
'''
ENV = {"ORDERS_TOKEN": "Bearer orders-secret-value", "KB_TOKEN": "Bearer kb-secret-value"}
TOOL = '''
[[tool]]
name = "lookup"
description = "Look something up."
url = "https://tools.example.com/lookup"
'''


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tools.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_documented_example_loads_with_headers_resolved_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    tools = load_tools_file(path, ENV)
    assert tools.path == path
    [tool] = tools.tools
    assert (tool.name, tool.url, tool.timeout_s) == ("order_status", "https://orders.example.com/api/status", 5.0)
    assert tool.description == "Look up the status of an order by its number."
    assert dict(tool.parameters) == {"type": "object", "properties": {"order": {"type": "string"}},
                                     "required": ["order"]}
    assert dict(tool.headers) == {"Authorization": "Bearer orders-secret-value"}
    [server] = tools.mcp
    assert (server.server_label, server.server_url, server.allowed_tools) == (
        "kb", "https://kb.example.com/mcp", ("search",))
    assert dict(server.headers) == {"Authorization": "Bearer kb-secret-value"}
    assert server.require_approval == "never"
    assert tools.tool("order_status") is tool
    assert tools.tool("nope") is None


def test_defaults_timeout_5_s_an_empty_object_schema_and_no_headers(tmp_path: Path) -> None:
    [tool] = load_tools_file(write(tmp_path, TOOL), {}).tools
    assert tool.timeout_s == 5.0
    assert dict(tool.parameters) == {"type": "object", "properties": {}}
    assert dict(tool.headers) == {}


def test_an_empty_file_declares_nothing(tmp_path: Path) -> None:
    tools = load_tools_file(write(tmp_path, "# nothing yet\n"), {})
    assert tools.tools == () and tools.mcp == () and tools.session_tools() == []


def test_plain_header_values_pass_as_written_and_http_to_loopback_is_allowed(tmp_path: Path) -> None:
    text = TOOL.replace("https://tools.example.com", "http://127.0.0.1:8080") + 'headers = { Accept = "text/plain" }\n'
    text += TOOL.replace('"lookup"', '"v6"').replace("https://tools.example.com", "http://[::1]:9000")
    text += TOOL.replace('"lookup"', '"named"').replace("https://tools.example.com", "http://localhost")
    first, v6, named = load_tools_file(write(tmp_path, text), {}).tools
    assert dict(first.headers) == {"Accept": "text/plain"}
    assert v6.url == "http://[::1]:9000/lookup" and named.url == "http://localhost/lookup"


def test_fractional_timeouts_up_to_30_s_are_allowed(tmp_path: Path) -> None:
    text = TOOL + "timeout_s = 0.5\n" + TOOL.replace('"lookup"', '"slow"') + "timeout_s = 30\n"
    fast, slow = load_tools_file(write(tmp_path, text), {}).tools
    assert (fast.timeout_s, slow.timeout_s) == (0.5, 30.0)


def test_mcp_require_approval_always_and_per_tool_tables(tmp_path: Path) -> None:
    text = '''
[[mcp]]
server_label = "a"
server_url = "https://a.example.com/mcp"
require_approval = "always"

[[mcp]]
server_label = "b"
server_url = "https://b.example.com/mcp"
require_approval = { always = ["delete"], never = ["search"] }
'''
    a, b = load_tools_file(write(tmp_path, text), {}).mcp
    assert a.require_approval == "always" and a.allowed_tools is None
    assert dict(b.require_approval) == {"always": ("delete",), "never": ("search",)}  # type: ignore[arg-type]


BAD = [
    pytest.param("[[tool]\nname = 1", "not valid TOML", id="invalid-toml"),
    pytest.param("[[tools]]\nname = \"x\"\n", "unknown key or table 'tools' (a tools file has only [[tool]] and "
                 "[[mcp]] tables)", id="unknown-table"),
    pytest.param("tool = \"x\"\n", "'tool' must be written as [[tool]] tables", id="tool-not-a-table"),
    pytest.param("[[tool]]\ndescription = \"d\"\nurl = \"https://x.example\"\n", "tool #1: name is required",
                 id="no-name"),
    pytest.param(TOOL.replace('"lookup"', '"has space"'),
                 "tool #1: name must be 1 to 64 letters, digits, '_' or '-'", id="bad-name"),
    pytest.param(TOOL.replace('"lookup"', '"' + "x" * 65 + '"'), "name must be 1 to 64", id="long-name"),
    pytest.param(TOOL + "method = \"GET\"\n", "tool 'lookup': unknown key 'method' (allowed: description, headers,"
                 " name, parameters, timeout_s, url)", id="unknown-key"),
    pytest.param(TOOL + TOOL, "tool 'lookup': the name is used twice", id="duplicate-name"),
    pytest.param(TOOL.replace('"lookup"', '"end_call"'), "tool 'end_call': the name 'end_call' is reserved",
                 id="reserved-end_call"),
    pytest.param(TOOL.replace('"lookup"', '"transfer_to_human"'), "the name 'transfer_to_human' is reserved",
                 id="reserved-transfer"),
    pytest.param(TOOL.replace('description = "Look something up."\n', ""),
                 "tool 'lookup': description is required (a non-empty string)", id="no-description"),
    pytest.param(TOOL.replace('"Look something up."', "3"), "tool 'lookup': description must be a non-empty "
                 "string, not 3", id="description-not-string"),
    pytest.param(TOOL.replace('url = "https://tools.example.com/lookup"\n', ""), "tool 'lookup': url is required",
                 id="no-url"),
    pytest.param(TOOL.replace("https://tools.example.com", "http://tools.example.com"),
                 "tool 'lookup': url must use https:// (http:// is allowed only to localhost, 127.0.0.1 or ::1)",
                 id="http-to-remote"),
    pytest.param(TOOL.replace("https://tools.example.com", "ftp://tools.example.com"),
                 "tool 'lookup': url must be an https:// URL with a host", id="ftp-url"),
    pytest.param(TOOL.replace("https://tools.example.com/lookup", "https:///path"),
                 "url must be an https:// URL with a host", id="no-host"),
    pytest.param(TOOL.replace("tools.example.com", "tools.example.com:99999"), "tool 'lookup': url is not a valid"
                 " URL", id="bad-port"),
    pytest.param(TOOL.replace("https://", "https://user:pw@"), "tool 'lookup': url must not hold credentials "
                 "(user:password@): send them in a header", id="userinfo"),
    pytest.param(TOOL + "timeout_s = 0\n", "tool 'lookup': timeout_s must be a number of seconds above 0 and at "
                 "most 30, not 0", id="timeout-zero"),
    pytest.param(TOOL + "timeout_s = 31\n", "timeout_s must be a number of seconds above 0 and at most 30, not 31",
                 id="timeout-too-long"),
    pytest.param(TOOL + "timeout_s = \"5\"\n", "timeout_s must be a number", id="timeout-string"),
    pytest.param(TOOL + "timeout_s = true\n", "timeout_s must be a number", id="timeout-bool"),
    pytest.param(TOOL + "timeout_s = nan\n", "timeout_s must be a number", id="timeout-nan"),
    pytest.param(TOOL + "parameters = \"object\"\n", "tool 'lookup': parameters must be a table", id="params-str"),
    pytest.param(TOOL + "parameters = { type = \"object\", properties = { n = { type = \"numbr\" } } }\n",
                 "tool 'lookup': parameters is not a valid JSON Schema at properties/n/type:", id="params-invalid"),
    pytest.param(TOOL + "parameters = { type = \"object\", required = \"order\" }\n",
                 "parameters is not a valid JSON Schema at required: 'order' is not of type 'array'",
                 id="params-required-not-list"),
    pytest.param(TOOL + "parameters = { type = \"string\" }\n", "tool 'lookup': parameters must be a JSON Schema "
                 "whose top level is type = \"object\"", id="params-not-object"),
    pytest.param(TOOL + "headers = \"Authorization: x\"\n", "tool 'lookup': headers must be a table of strings",
                 id="headers-not-table"),
    pytest.param(TOOL + "headers = { \"Bad Header\" = \"x\" }\n", "header name 'Bad Header' is not a valid HTTP "
                 "header name", id="header-name"),
    pytest.param(TOOL + "headers = { X-Count = 3 }\n", "header 'X-Count' must be a string", id="header-not-str"),
    pytest.param(TOOL + "headers = { Authorization = \"env:MISSING_TOKEN\" }\n", "tool 'lookup': header "
                 "'Authorization': environment variable MISSING_TOKEN is not set or empty", id="env-missing"),
    pytest.param(TOOL + "headers = { Authorization = \"env:EMPTY_TOKEN\" }\n", "environment variable EMPTY_TOKEN "
                 "is not set or empty", id="env-empty"),
    pytest.param(TOOL + "headers = { Authorization = \"env:BROKEN_TOKEN\" }\n", "environment variable BROKEN_TOKEN"
                 " holds a line break", id="env-line-break"),
    pytest.param(TOOL + "headers = { Authorization = \"env:\" }\n", "'env:' is not a valid env:NAME reference",
                 id="env-no-name"),
    pytest.param(TOOL + "headers = { X-A = \"a\\r\\nX-B: b\" }\n", "header 'X-A': the value holds a line break",
                 id="header-injection"),
    pytest.param("[[mcp]]\nserver_url = \"https://kb.example.com/mcp\"\n", "mcp server #1: server_label is required",
                 id="mcp-no-label"),
    pytest.param("[[mcp]]\nserver_label = \"k b\"\n", "mcp server #1: server_label must be 1 to 64",
                 id="mcp-bad-label"),
    pytest.param("[[mcp]]\nserver_label = \"kb\"\n", "mcp server 'kb': server_url is required", id="mcp-no-url"),
    pytest.param("[[mcp]]\nserver_label = \"kb\"\nserver_url = \"http://kb.example.com/mcp\"\n",
                 "mcp server 'kb': server_url must use https://", id="mcp-http"),
    pytest.param("[[mcp]]\nserver_label = \"kb\"\nserver_url = \"https://kb.example.com\"\nallowed_tools = \"all\"\n",
                 "mcp server 'kb': allowed_tools must be a list of tool names (strings)", id="mcp-allowed-str"),
    pytest.param("[[mcp]]\nserver_label = \"kb\"\nserver_url = \"https://kb.example.com\"\nallowed_tools = [1]\n",
                 "allowed_tools must be a list of tool names", id="mcp-allowed-int"),
    pytest.param("[[mcp]]\nserver_label = \"kb\"\nserver_url = \"https://kb.example.com\"\n"
                 "require_approval = \"sometimes\"\n", "mcp server 'kb': require_approval must be \"never\" or "
                 "\"always\" (or a per-tool table), not 'sometimes'", id="mcp-approval"),
    pytest.param("[[mcp]]\nserver_label = \"kb\"\nserver_url = \"https://kb.example.com\"\n"
                 "require_approval = { maybe = [\"x\"] }\n", "require_approval must be \"never\", \"always\" or a "
                 "table of tool-name lists", id="mcp-approval-table"),
    pytest.param("[[mcp]]\nserver_label = \"kb\"\nserver_url = \"https://kb.example.com\"\ntimeout_s = 3\n",
                 "mcp server 'kb': unknown key 'timeout_s'", id="mcp-unknown-key"),
    pytest.param("[[mcp]]\nserver_label = \"kb\"\nserver_url = \"https://kb.example.com\"\n"
                 "headers = { Authorization = \"env:MISSING_TOKEN\" }\n", "mcp server 'kb': header 'Authorization': "
                 "environment variable MISSING_TOKEN is not set or empty", id="mcp-env-missing"),
    pytest.param("[[mcp]]\nserver_label = \"kb\"\nserver_url = \"https://kb.example.com\"\n" * 2,
                 "mcp server 'kb': the name is used twice", id="mcp-duplicate"),
]


@pytest.mark.parametrize(("text", "problem"), BAD)
def test_a_bad_tools_file_is_one_line_naming_the_file_and_the_problem(tmp_path: Path, text: str,
                                                                        problem: str) -> None:
    path = write(tmp_path, text)
    environ = {"EMPTY_TOKEN": " ", "BROKEN_TOKEN": "Bearer a\r\nX-Injected: 1", "OK_TOKEN": "fine"}
    with pytest.raises(ToolsFileError) as caught:
        load_tools_file(path, environ)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert problem in message, message
    assert "\n" not in message
    assert "X-Injected" not in message  # a variable's value never appears, only its name


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ToolsFileError, match=r"absent\.toml: cannot read the tools file \(No such file"):
        load_tools_file(path, {})


def test_a_directory_is_not_a_tools_file(tmp_path: Path) -> None:
    with pytest.raises(ToolsFileError, match="cannot read the tools file"):
        load_tools_file(tmp_path, {})


def test_a_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "tools.toml"
    path.write_bytes(b'[[tool]]\nname = "\xff"\n')
    with pytest.raises(ToolsFileError, match="not valid TOML"):
        load_tools_file(path, {})


def test_the_values_a_tool_holds_are_read_only(tmp_path: Path) -> None:
    [tool] = load_tools_file(write(tmp_path, EXAMPLE), ENV).tools
    assert isinstance(tool, HttpTool)
    with pytest.raises(TypeError):
        tool.parameters["type"] = "string"  # type: ignore[index]
    with pytest.raises(TypeError):
        tool.headers["Authorization"] = "x"  # type: ignore[index]
    server = load_tools_file(write(tmp_path, EXAMPLE), ENV).mcp[0]
    assert isinstance(server, McpServer)
