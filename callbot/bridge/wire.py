"""What the runner keeps between the call's two sockets: the wire tap (recording) and the Voice Live outbox."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol

APPEND = "input_audio_buffer.append"  # caller audio for the model: the one event the outbox may drop
OUTBOX_LIMIT = 250  # 5 s of caller audio; beyond that the model socket is stalled and the oldest audio is dropped


class WireTap(Protocol):
    """Sees every message at the call's wire boundaries (the call recorder implements it)."""

    def acs_in(self, raw: str | bytes) -> None: ...
    def acs_out(self, raw: str | bytes) -> None: ...
    def vl_out(self, event: dict[str, Any]) -> None: ...
    def vl_in(self, event: dict[str, Any]) -> None: ...
    def voicelive_closed(self) -> None: ...
    def media_opened(self) -> None: ...
    def end_call(self, reason: str, local_audio: bytes) -> None: ...
    def agent(self, can_transfer: bool, tools: list[dict[str, Any]]) -> None: ...
    def tool_result(self, call_id: str, name: str, output: str, outcome: str) -> None: ...
    def transfer_outcome(self, accepted: bool, detail: str) -> None: ...


class Outbox:
    """Bounded queue of client events for Voice Live. When full, the oldest caller audio is dropped, never control."""

    def __init__(self, limit: int) -> None:
        self.items: deque[dict[str, Any]] = deque()
        self.limit = limit
        self.ready = asyncio.Event()
        self.dropped = 0

    def put(self, event: dict[str, Any]) -> None:
        if len(self.items) >= self.limit:
            for i, queued in enumerate(self.items):
                if queued.get("type") == APPEND:
                    del self.items[i]
                    self.dropped += 1
                    break
        self.items.append(event)
        self.ready.set()

    async def get(self) -> dict[str, Any]:
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        return self.items.popleft()

