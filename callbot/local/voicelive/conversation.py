"""The conversation of one Voice Live session: ordered items and the audio sent for each assistant item.

No I/O: methods raise :class:`ProtocolError` where the service would answer with an ``error`` event.
"""

from __future__ import annotations

import copy
from typing import Any

from callbot.local.voicelive.protocol import ITEM_TYPES, ROLES, ProtocolError, new_id

Event = dict[str, Any]


class Conversation:
    def __init__(self) -> None:
        self.items: dict[str, Event] = {}  # in conversation order
        self.audio_ms: dict[str, float] = {}  # assistant audio items: ms sent (after a truncation: kept)
        self.truncations: dict[str, int] = {}

    @property
    def last_id(self) -> str | None:
        return next(reversed(self.items), None)

    def get(self, item_id: Any) -> Event:
        if not isinstance(item_id, str):
            raise ProtocolError("missing_required_parameter", "Missing required parameter: 'item_id'.",
                                param="item_id")  # fmt: skip
        if item_id not in self.items:
            raise ProtocolError("invalid_value", f"Conversation item with id '{item_id}' not found.",
                                param="item_id")  # fmt: skip
        return self.items[item_id]

    def create(self, item: Any, previous_item_id: Any = None) -> tuple[str | None, Event]:
        """Validate and insert a client item (``conversation.item.create``); returns (previous id, item)."""
        if not isinstance(item, dict) or item.get("type") not in ITEM_TYPES:
            raise ProtocolError("invalid_value", "Invalid 'item.type'.", param="item.type")
        if item["type"] == "message" and item.get("role") not in ROLES:
            raise ProtocolError("invalid_value", "Invalid 'item.role'.", param="item.role")
        if item["type"] == "function_call":
            _require_strings(item, "call_id", "name", "arguments")
        elif item["type"] == "function_call_output":
            _require_strings(item, "call_id", "output")
            if self.function_call(item["call_id"]) is None:
                raise ProtocolError("invalid_tool_call_id",
                                    f"Tool call ID '{item['call_id']}' not found in conversation.")  # fmt: skip
        stored: Event = {**copy.deepcopy(item), "object": "realtime.item"}
        stored.setdefault("id", new_id("item"))
        stored.setdefault("status", "completed")
        if stored["id"] in self.items:
            raise ProtocolError("invalid_value", f"Item with id '{stored['id']}' already exists.", param="item.id")
        if previous_item_id is None:
            previous = self.last_id
            self.items[stored["id"]] = stored
            return previous, stored
        if previous_item_id != "root" and previous_item_id not in self.items:
            raise ProtocolError("invalid_value", f"Previous item with id '{previous_item_id}' not found.",
                                param="previous_item_id")  # fmt: skip
        entries = list(self.items.items())
        at = 0 if previous_item_id == "root" else list(self.items).index(previous_item_id) + 1
        entries.insert(at, (stored["id"], stored))
        self.items = dict(entries)
        return previous_item_id, stored

    def function_call(self, call_id: str) -> Event | None:
        """The ``function_call`` item of ``call_id`` (made by the model or restored by the client)."""
        for item in self.items.values():
            if item.get("type") == "function_call" and item.get("call_id") == call_id:
                return item
        return None

    def put(self, item: Event) -> str | None:
        """Append or replace a server-made item (assistant output, committed user audio); returns previous id."""
        previous = None if item["id"] in self.items else self.last_id
        self.items[item["id"]] = item
        return previous

    def add_user_audio(self, item_id: str) -> tuple[str | None, Event]:
        item = {"id": item_id, "object": "realtime.item", "type": "message", "status": "completed",
                "role": "user", "content": [{"type": "input_audio", "transcript": None}]}  # fmt: skip
        return self.put(item), item

    def set_input_transcript(self, item_id: str, transcript: str) -> None:
        for part in (self.items.get(item_id) or {}).get("content") or []:
            if part.get("type") == "input_audio":
                part["transcript"] = transcript

    def delete(self, item_id: Any) -> str:
        self.get(item_id)
        del self.items[item_id]
        self.audio_ms.pop(item_id, None)
        return str(item_id)

    def truncate(self, item_id: Any, audio_end_ms: Any) -> None:
        """Cut an assistant audio item at ``audio_end_ms``; its transcript is cut in proportion."""
        item = self.get(item_id)
        if not isinstance(audio_end_ms, int) or isinstance(audio_end_ms, bool) or audio_end_ms < 0:
            raise ProtocolError("invalid_value", "Invalid 'audio_end_ms'.", param="audio_end_ms")
        if item.get("role") != "assistant" or item_id not in self.audio_ms:
            raise ProtocolError("invalid_value", "Only model output audio messages can be truncated",
                                param="item_id")  # fmt: skip
        available = self.audio_ms[item_id]
        if audio_end_ms > available:
            raise ProtocolError("invalid_value", f"Audio content of {int(available)}ms is already shorter "
                                f"than {audio_end_ms}ms", param="audio_end_ms")  # fmt: skip
        self.audio_ms[item_id] = float(audio_end_ms)
        self.truncations[item_id] = audio_end_ms
        for part in item.get("content") or []:
            if part.get("type") == "audio" and part.get("transcript") and available > 0:
                part["transcript"] = part["transcript"][: round(len(part["transcript"]) * audio_end_ms / available)]


def _require_strings(item: Event, *keys: str) -> None:
    for key in keys:
        if key not in item:
            raise ProtocolError("missing_required_parameter", f"Missing required parameter: 'item.{key}'.",
                                param=f"item.{key}")  # fmt: skip
        if not isinstance(item[key], str):
            raise ProtocolError("invalid_type", f"Invalid type for 'item.{key}': expected a string.",
                                param=f"item.{key}")  # fmt: skip
