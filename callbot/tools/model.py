"""What a tools file declares: HTTP tools (the model calls them through callbot) and MCP servers (Voice Live calls
them itself). Frozen values built by `callbot.tools.load.load_tools_file`; header values are secrets and never shown.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from jsonschema import Draft202012Validator

RESERVED_NAMES = frozenset({"end_call", "transfer_to_human"})  # callbot's own functions: no operator tool may be one
Approval = Literal["never", "always"]


class ToolsFileError(ValueError):
    """A tools file that cannot be used; `str()` is one line naming the file, the tool and the problem."""


class Headers(Mapping[str, str]):
    """HTTP headers with resolved (secret) values: a read-only mapping whose repr and str show only the names."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return "Headers(" + ", ".join(f"{name}=<hidden>" for name in self._values) + ")"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and self._values == dict(other)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values)))


def safe_url(url: str) -> str:
    """`url` without its userinfo, query and fragment (they may hold secrets): fit for logs and reprs."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:
        return "<unparsable URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _hidden(value: Mapping[str, str]) -> Headers:
    return value if isinstance(value, Headers) else Headers(value)


@dataclass(frozen=True)
class HttpTool:
    """A function the model may call; callbot POSTs the call to `url` (see `callbot.tools.runner`)."""

    name: str
    description: str
    url: str = field(repr=False)
    timeout_s: float = 5.0
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}}, hash=False)
    headers: Mapping[str, str] = field(default_factory=Headers)
    validator: Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        schema = copy.deepcopy(dict(self.parameters))
        object.__setattr__(self, "parameters", MappingProxyType(schema))
        object.__setattr__(self, "headers", _hidden(self.headers))
        object.__setattr__(self, "validator", Draft202012Validator(schema))

    def __repr__(self) -> str:
        return (f"HttpTool(name={self.name!r}, url={safe_url(self.url)!r}, timeout_s={self.timeout_s!r}, "
                f"headers={self.headers!r})")

    __str__ = __repr__

    def definition(self) -> dict[str, Any]:
        """The Voice Live function tool for `session.update` (`tools`)."""
        return {"type": "function", "name": self.name, "description": self.description,
                "parameters": copy.deepcopy(dict(self.parameters))}


@dataclass(frozen=True)
class McpServer:
    """An MCP server Voice Live calls itself (`type: "mcp"` session tool); callbot only answers approval requests.

    `require_approval` is "never", "always", or per tool: {"always": [names], "never": [names]} (the Voice Live
    SDK's `MCPServer.require_approval` forms)."""

    server_label: str
    server_url: str = field(repr=False)
    allowed_tools: tuple[str, ...] | None = None
    headers: Mapping[str, str] = field(default_factory=Headers)
    require_approval: Approval | Mapping[Approval, tuple[str, ...]] = "never"

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _hidden(self.headers))
        if not isinstance(self.require_approval, str):
            object.__setattr__(self, "require_approval",
                               MappingProxyType({k: tuple(v) for k, v in self.require_approval.items()}))

    def __repr__(self) -> str:
        return (f"McpServer(server_label={self.server_label!r}, server_url={safe_url(self.server_url)!r}, "
                f"allowed_tools={self.allowed_tools!r}, headers={self.headers!r}, "
                f"require_approval={self._approval()!r})")

    __str__ = __repr__

    def _approval(self) -> str | dict[str, list[str]]:
        policy = self.require_approval
        return policy if isinstance(policy, str) else {k: list(v) for k, v in policy.items()}

    def definition(self) -> dict[str, Any]:
        """The Voice Live MCP tool for `session.update` (`azure.ai.voicelive.models.MCPServer` field names).
        It carries the resolved header values: send it, never log or record it (`redacted()` for that)."""
        out: dict[str, Any] = {"type": "mcp", "server_label": self.server_label, "server_url": self.server_url,
                               "require_approval": self._approval()}
        if self.allowed_tools is not None:
            out["allowed_tools"] = list(self.allowed_tools)
        if self.headers:
            out["headers"] = dict(self.headers)
        return out

    def redacted(self) -> dict[str, Any]:
        """`definition()` with header values hidden and the URL cut to scheme, host and path."""
        out = self.definition()
        out["server_url"] = safe_url(self.server_url)
        if "headers" in out:
            out["headers"] = dict.fromkeys(out["headers"], "<redacted>")
        return out

    def approves(self, tool_name: str) -> bool:
        """callbot's answer to an approval request for `tool_name` (no person can be asked during a phone call):
        yes for a tool the file allows on this server (any tool when `allowed_tools` is not given)."""
        return self.allowed_tools is None or tool_name in self.allowed_tools


@dataclass(frozen=True)
class ToolsFile:
    """A loaded, validated tools file."""

    path: Path
    tools: tuple[HttpTool, ...] = ()
    mcp: tuple[McpServer, ...] = ()

    def session_tools(self, *, redacted: bool = False) -> list[dict[str, Any]]:
        """Every definition for `session.update` `tools`: HTTP tools, then MCP servers. `redacted=True` hides the
        MCP header values and URL queries (for recordings and logs); send the unredacted form."""
        return ([t.definition() for t in self.tools]
                + [m.redacted() if redacted else m.definition() for m in self.mcp])

    def tool(self, name: str) -> HttpTool | None:
        return next((t for t in self.tools if t.name == name), None)

    def server(self, server_label: str) -> McpServer | None:
        return next((m for m in self.mcp if m.server_label == server_label), None)

    def approves(self, server_label: str, tool_name: str) -> bool:
        """The answer to a Voice Live MCP approval request: only for a server in this file and a tool it allows."""
        server = self.server(server_label)
        return server is not None and server.approves(tool_name)
