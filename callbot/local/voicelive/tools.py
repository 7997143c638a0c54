"""Function calling on the local Voice Live server: session ``tools`` / ``tool_choice`` validation and the
function call items of a response.

Validation follows the service: a function tool is ``{"type": "function", "name", "description",
"parameters"}`` with a name of ``^[a-zA-Z0-9_-]{1,64}$``, unique in the session, and parameters that are a
valid JSON Schema (checked with ``jsonschema``'s meta-schema) of ``type: "object"``; ``type: "mcp"`` tools need a
``server_label`` and an http(s) ``server_url`` and are kept as given (this server never calls MCP servers).
``tool_choice`` is ``auto`` / ``none`` / ``required`` or ``{"type": "function", "name": <a declared tool>}``.

A function call streams as ``response.output_item.added`` (item ``function_call``, ``arguments: ""``,
``in_progress``), ``conversation.item.created``, ``response.function_call_arguments.delta`` chunks of
`ARGUMENT_CHUNK` characters, ``response.function_call_arguments.done`` and ``response.output_item.done``
(``completed``, full arguments). A cancel stops the deltas; the item is then done as ``incomplete``.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema
from jsonschema.validators import validator_for

from callbot.local.voicelive.protocol import ProtocolError, new_id

if TYPE_CHECKING:
    from callbot.local.voicelive.response import ResponseHandle
    from callbot.local.voicelive.session import ServerSession

Event = dict[str, Any]
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_CHOICES = frozenset({"auto", "none", "required"})
FUNCTION_FIELDS = frozenset({"type", "name", "description", "parameters"})
MCP_FIELDS = frozenset({"type", "server_label", "server_url", "authorization", "headers", "allowed_tools",
                        "require_approval"})  # fmt: skip
ARGUMENT_CHUNK = 8


@dataclass(frozen=True)
class FunctionCall:
    """One function call the model makes: ``arguments`` is the JSON text streamed in deltas."""

    name: str
    arguments: str
    call_id: str = field(default_factory=lambda: new_id("call"))
    item_id: str = field(default_factory=lambda: new_id("item"))


def check_session_tools(update: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """The ``tools`` / ``tool_choice`` of a ``session.update`` (the choice against the tools it leaves)."""
    tools = config.get("tools") or []
    if update.get("tools") is not None:
        tools = validate_tools(update["tools"])
    if update.get("tool_choice") is not None:
        validate_tool_choice(update["tool_choice"], tools)


def validate_tools(tools: Any) -> list[Event]:
    """Check a session's ``tools`` like the service; returns them or raises :class:`ProtocolError`."""
    if not isinstance(tools, list):
        raise ProtocolError("invalid_type", "Invalid type for 'session.tools': expected an array.",
                            param="session.tools")  # fmt: skip
    names: set[str] = set()
    for index, tool in enumerate(tools):
        param = f"session.tools[{index}]"
        if not isinstance(tool, dict):
            raise ProtocolError("invalid_type", f"Invalid type for '{param}': expected an object.", param=param)
        if tool.get("type") == "function":
            name = _check_function(tool, param)
            if name in names:
                raise ProtocolError("invalid_value", f"Duplicate tool name: '{name}'.", param=f"{param}.name")
            names.add(name)
        elif tool.get("type") == "mcp":
            _check_mcp(tool, param)
        else:
            raise ProtocolError("invalid_value", f"Invalid value: {tool.get('type')!r}. Supported values are: "
                                "'function' and 'mcp'.", param=f"{param}.type")  # fmt: skip
    return tools


def validate_tool_choice(choice: Any, tools: list[Event]) -> None:
    """``tool_choice`` against the session's (new) tools."""
    if isinstance(choice, str) and choice in TOOL_CHOICES:
        return
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        if choice["name"] in function_names(tools):
            return
        raise ProtocolError("invalid_value", f"Tool choice 'function' with name '{choice['name']}' is not among "
                            "the session's tools.", param="session.tool_choice")  # fmt: skip
    raise ProtocolError("invalid_value", f"Invalid value: {choice!r}. Supported values are: 'auto', 'none', "
                        "'required' or a function tool choice.", param="session.tool_choice")  # fmt: skip


def function_names(tools: Any) -> list[str]:
    """The names of the function tools of a (validated) ``tools`` list."""
    if not isinstance(tools, list):
        return []
    return [str(t["name"]) for t in tools if isinstance(t, dict) and t.get("type") == "function"]


def callable_tools(config: Mapping[str, Any], params: Mapping[str, Any]) -> frozenset[str]:
    """The function tools the model may call in a response: the response's ``tools`` / ``tool_choice`` when
    given, else the session's; ``tool_choice: "none"`` allows none."""
    tools = params["tools"] if isinstance(params.get("tools"), list) else config.get("tools")
    choice = params.get("tool_choice", config.get("tool_choice", "auto"))
    if choice == "none":
        return frozenset()
    if isinstance(choice, dict) and isinstance(choice.get("name"), str):
        return frozenset(n for n in function_names(tools) if n == choice["name"])
    return frozenset(function_names(tools))


def _check_function(tool: Event, param: str) -> str:
    for key in tool:
        if key not in FUNCTION_FIELDS:
            raise ProtocolError("unknown_parameter", f"Unknown parameter: '{param}.{key}'.", param=f"{param}.{key}")
    name = tool.get("name")
    if not isinstance(name, str):
        raise ProtocolError("missing_required_parameter", f"Missing required parameter: '{param}.name'.",
                            param=f"{param}.name")  # fmt: skip
    if not TOOL_NAME.match(name):
        raise ProtocolError("invalid_value", f"Invalid '{param}.name': string does not match pattern. Expected a "
                            f"string that matches the pattern '{TOOL_NAME.pattern}'.",
                            param=f"{param}.name")  # fmt: skip
    if tool.get("description") is not None and not isinstance(tool["description"], str):
        raise ProtocolError("invalid_type", f"Invalid type for '{param}.description': expected a string.",
                            param=f"{param}.description")  # fmt: skip
    schema = tool.get("parameters")
    if schema is None:
        return name
    if not isinstance(schema, dict):
        raise ProtocolError("invalid_type", f"Invalid type for '{param}.parameters': expected an object.",
                            param=f"{param}.parameters")  # fmt: skip
    try:
        validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as err:
        raise ProtocolError("invalid_function_parameters", f"Invalid schema for function '{name}': {err.message}.",
                            param=f"{param}.parameters") from None  # fmt: skip
    if schema.get("type") != "object":
        raise ProtocolError("invalid_function_parameters", f"Invalid schema for function '{name}': schema must be "
                            f"a JSON Schema of 'type: \"object\"', got 'type: \"{schema.get('type')}\"'.",
                            param=f"{param}.parameters")  # fmt: skip
    return name


def _check_mcp(tool: Event, param: str) -> None:
    for key in tool:
        if key not in MCP_FIELDS:
            raise ProtocolError("unknown_parameter", f"Unknown parameter: '{param}.{key}'.", param=f"{param}.{key}")
    for key in ("server_label", "server_url"):
        if not isinstance(tool.get(key), str) or not tool[key]:
            raise ProtocolError("missing_required_parameter", f"Missing required parameter: '{param}.{key}'.",
                                param=f"{param}.{key}")  # fmt: skip
    if not TOOL_NAME.match(tool["server_label"]):
        raise ProtocolError("invalid_value", f"Invalid '{param}.server_label': string does not match pattern.",
                            param=f"{param}.server_label")  # fmt: skip
    if not tool["server_url"].startswith(("https://", "http://")):
        raise ProtocolError("invalid_value", f"Invalid '{param}.server_url': expected an http(s) URL.",
                            param=f"{param}.server_url")  # fmt: skip
    allowed = tool.get("allowed_tools")
    if allowed is not None and not (isinstance(allowed, list) and all(isinstance(a, str) for a in allowed)):
        raise ProtocolError("invalid_type", f"Invalid type for '{param}.allowed_tools': expected an array of "
                            "strings.", param=f"{param}.allowed_tools")  # fmt: skip
    headers = tool.get("headers")
    if headers is not None and not (isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())):
        raise ProtocolError("invalid_type", f"Invalid type for '{param}.headers': expected an object of strings.",
                            param=f"{param}.headers")  # fmt: skip


def function_call_item(call: FunctionCall, *, status: str, arguments: str) -> Event:
    """A ``ResponseFunctionCallItem``."""
    return {"id": call.item_id, "object": "realtime.item", "type": "function_call", "status": status,
            "name": call.name, "call_id": call.call_id, "arguments": arguments}  # fmt: skip


async def stream_function_call(session: ServerSession, handle: ResponseHandle, index: int, call: FunctionCall) -> Event:
    """Stream one function call item of a response (see the module docstring); returns the final item."""
    item = function_call_item(call, status="in_progress", arguments="")
    previous = session.conversation.put(item)
    await session.send({"type": "response.output_item.added", "response_id": handle.response_id,
                        "output_index": index, "item": copy.deepcopy(item)})  # fmt: skip
    await session.send({"type": "conversation.item.created", "previous_item_id": previous,
                        "item": copy.deepcopy(item)})  # fmt: skip
    ids = {"response_id": handle.response_id, "item_id": call.item_id, "output_index": index,
           "call_id": call.call_id}  # fmt: skip
    sent = ""
    for start in range(0, len(call.arguments), ARGUMENT_CHUNK):
        if handle.cancel_requested:
            break
        delta = call.arguments[start : start + ARGUMENT_CHUNK]
        await session.send({"type": "response.function_call_arguments.delta", **ids, "delta": delta})
        sent += delta
        await asyncio.sleep(0)
    complete = sent == call.arguments
    if complete:
        await session.send({"type": "response.function_call_arguments.done", **ids, "arguments": sent,
                            "name": call.name})  # fmt: skip
    final = function_call_item(call, status="completed" if complete else "incomplete", arguments=sent)
    session.conversation.put(final)
    await session.send({"type": "response.output_item.done", "response_id": handle.response_id,
                        "output_index": index, "item": copy.deepcopy(final)})  # fmt: skip
    return final
