"""Reading and validating a tools file (TOML): one `[[tool]]` table per HTTP tool, one `[[mcp]]` per MCP server.

Every problem is one `ToolsFileError` line naming the file, the tool and what is wrong; header values (secrets)
never appear in one, only the names of the environment variables they come from.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from callbot.tools.model import RESERVED_NAMES, Headers, HttpTool, McpServer, ToolsFile, ToolsFileError

log = logging.getLogger(__name__)

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
MAX_TIMEOUT_S = 30.0
DEFAULT_TIMEOUT_S = 5.0
TOOL_KEYS = frozenset({"name", "description", "url", "timeout_s", "parameters", "headers"})
MCP_KEYS = frozenset({"server_label", "server_url", "allowed_tools", "headers", "require_approval"})
APPROVALS = ("never", "always")


def load_tools_file(path: Path, environ: Mapping[str, str]) -> ToolsFile:
    """Read and check the tools file at `path`; `env:NAME` header values are resolved from `environ`."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ToolsFileError(f"{path}: cannot read the tools file ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise ToolsFileError(f"{path}: not valid TOML (the file is not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ToolsFileError(f"{path}: not valid TOML: {_one_line(str(exc))}") from None
    unknown = sorted(set(data) - {"tool", "mcp"})
    if unknown:
        raise ToolsFileError(f"{path}: unknown key or table {unknown[0]!r} (a tools file has only [[tool]] and "
                             "[[mcp]] tables)")
    tools = tuple(_tool(path, i, table, environ) for i, table in enumerate(_tables(path, data, "tool"), 1))
    servers = tuple(_mcp(path, i, table, environ) for i, table in enumerate(_tables(path, data, "mcp"), 1))
    _unique(path, "tool", [t.name for t in tools])
    _unique(path, "mcp server", [m.server_label for m in servers])
    return ToolsFile(path=path, tools=tools, mcp=servers)


async def read_tools_file(path: Path) -> ToolsFile:
    """`load_tools_file` off the event loop, with the process environment (as the service does at start)."""
    tools = await asyncio.to_thread(load_tools_file, path, dict(os.environ))
    log.info("operator tools from %s: %d HTTP tool(s) (%s), %d MCP server(s) (%s)", path, len(tools.tools),
             ", ".join(t.name for t in tools.tools) or "none", len(tools.mcp),
             ", ".join(m.server_label for m in tools.mcp) or "none")
    return tools


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _tables(path: Path, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    tables = data.get(key, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ToolsFileError(f"{path}: {key!r} must be written as [[{key}]] tables")
    return tables


def _unique(path: Path, kind: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ToolsFileError(f"{path}: {kind} {name!r}: the name is used twice (names must be unique)")
        seen.add(name)


class _Table:
    """One `[[tool]]` or `[[mcp]]` table being checked: every error names the file and the table."""

    def __init__(self, path: Path, kind: str, index: int, values: dict[str, Any], name_key: str,
                 keys: frozenset[str]) -> None:
        self.path, self.kind, self.values = path, kind, values
        self.label = f"{kind} #{index}"
        name = values.get(name_key)
        if name is None:
            raise self.error(f"{name_key} is required")
        if not isinstance(name, str) or not NAME.match(name):
            raise self.error(f"{name_key} must be 1 to 64 letters, digits, '_' or '-' (^[a-zA-Z0-9_-]{{1,64}}$), "
                             f"not {_shown(name)}")
        self.label = f"{kind} {name!r}"
        self.name = name
        unknown = sorted(set(values) - keys)
        if unknown:
            raise self.error(f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(keys))})")

    def error(self, problem: str) -> ToolsFileError:
        return ToolsFileError(f"{self.path}: {self.label}: {problem}")

    def string(self, key: str, *, required: bool = True) -> str | None:
        value = self.values.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"{key} is required (a non-empty string)" if value is None
                             else f"{key} must be a non-empty string, not {_shown(value)}")
        return value

    def url(self, key: str) -> str:
        url = self.string(key)
        assert url is not None
        try:
            parts = urlsplit(url)
            host, scheme = parts.hostname, parts.scheme.lower()
            _ = parts.port  # raises ValueError on a bad port
        except ValueError:
            raise self.error(f"{key} is not a valid URL") from None
        if not host or scheme not in ("https", "http"):
            raise self.error(f"{key} must be an https:// URL with a host (http:// only to localhost, 127.0.0.1, ::1)")
        if parts.username is not None or parts.password is not None:
            raise self.error(f"{key} must not hold credentials (user:password@): send them in a header, "
                             "e.g. headers = { Authorization = \"env:TOKEN\" }")
        if scheme == "http" and host.lower() not in LOOPBACK_HOSTS:
            raise self.error(f"{key} must use https:// (http:// is allowed only to localhost, 127.0.0.1 or ::1)")
        return url

    def headers(self, environ: Mapping[str, str]) -> Headers:
        table = self.values.get("headers", {})
        if not isinstance(table, dict):
            raise self.error("headers must be a table of strings, e.g. headers = { Authorization = \"env:TOKEN\" }")
        out: dict[str, str] = {}
        for name, value in table.items():
            if not HEADER_NAME.match(name):
                raise self.error(f"header name {name!r} is not a valid HTTP header name")
            if not isinstance(value, str):
                raise self.error(f"header {name!r} must be a string (a value or \"env:NAME\")")
            if value.startswith("env:"):
                variable = value[4:]
                if not ENV_NAME.match(variable):
                    raise self.error(f"header {name!r}: {value!r} is not a valid env:NAME reference")
                value = environ.get(variable, "")
                if not value.strip():
                    raise self.error(f"header {name!r}: environment variable {variable} is not set or empty")
                if "\r" in value or "\n" in value:
                    raise self.error(f"header {name!r}: environment variable {variable} holds a line break")
            elif "\r" in value or "\n" in value:
                raise self.error(f"header {name!r}: the value holds a line break")
            out[name] = value
        return Headers(out)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _tool(path: Path, index: int, values: dict[str, Any], environ: Mapping[str, str]) -> HttpTool:
    t = _Table(path, "tool", index, values, "name", TOOL_KEYS)
    if t.name in RESERVED_NAMES:
        raise t.error(f"the name {t.name!r} is reserved for callbot's own function (reserved: "
                      f"{', '.join(sorted(RESERVED_NAMES))})")
    description = t.string("description")
    assert description is not None
    url = t.url("url")
    timeout = values.get("timeout_s", DEFAULT_TIMEOUT_S)
    if (isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout)
            or not 0 < timeout <= MAX_TIMEOUT_S):
        raise t.error(f"timeout_s must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}, "
                      f"not {_shown(timeout)}")
    parameters = values.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict):
        raise t.error("parameters must be a table (a JSON Schema with type = \"object\")")
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise t.error(f"parameters is not a valid JSON Schema{f' at {where}' if where else ''}: "
                      f"{_one_line(exc.message)[:200]}") from None
    if parameters.get("type") != "object":
        raise t.error("parameters must be a JSON Schema whose top level is type = \"object\"")
    return HttpTool(name=t.name, description=description, url=url, timeout_s=float(timeout),
                    parameters=parameters, headers=t.headers(environ))


def _mcp(path: Path, index: int, values: dict[str, Any], environ: Mapping[str, str]) -> McpServer:
    m = _Table(path, "mcp server", index, values, "server_label", MCP_KEYS)
    url = m.url("server_url")
    allowed = values.get("allowed_tools")
    if allowed is not None and (not isinstance(allowed, list)
                                or not all(isinstance(a, str) and a.strip() for a in allowed)):
        raise m.error("allowed_tools must be a list of tool names (strings)")
    approval = values.get("require_approval", "never")
    if isinstance(approval, dict):
        if (not approval or set(approval) - set(APPROVALS)
                or not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in approval.values())):
            raise m.error("require_approval must be \"never\", \"always\" or a table of tool-name lists, "
                          "e.g. { always = [\"delete\"], never = [\"search\"] }")
    elif approval not in APPROVALS:
        raise m.error(f"require_approval must be \"never\" or \"always\" (or a per-tool table), not {_shown(approval)}")
    return McpServer(server_label=m.name, server_url=url,
                     allowed_tools=None if allowed is None else tuple(allowed),
                     headers=m.headers(environ), require_approval=approval)
