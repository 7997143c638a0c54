"""Per-call state and the registry of live calls (one registry per app instance, never module-level)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from callbot.bridge.pacer import Pacer

log = logging.getLogger(__name__)

MAX_ENDED_IDS = 10000


@dataclass
class Call:
    call_id: str
    created_at: float
    caller: str = ""  # masked, for logs
    caller_id: str = ""  # the caller's number or raw id: personal data, for the operator's tools only (never logged)
    caller_raw_id: str | None = None  # the caller's ACS raw id (4:+1... from the phone network): personal data
    connection_id: str | None = None
    correlation_id: str | None = None
    media_connected: bool = False
    ended: bool = False
    end_reason: str = ""
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    stop_bridge: Callable[[str], None] | None = None  # set while a media bridge runs
    end_gracefully: Callable[[str], None] | None = None  # goodbye then hang-up, while a media bridge runs
    bridge: Any = None  # the call's CallBridge (typed Any: calls.py stays free of the bridge's imports)
    recorder: Any = None  # the call's CallRecorder when CALLBOT_RECORDINGS_DIR is set
    trace: Any = None  # the call's callbot.telemetry.CallTrace when OpenTelemetry exports
    transfer: str = ""  # "" / "requested" / "accepted" / "failed": a transfer to a human (callbot.transfers)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class CallRegistry:
    """Live calls by call id, capacity accounting and background work that must finish before shutdown."""

    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self.calls: dict[str, Call] = {}
        self.draining = False
        self.background: set[asyncio.Task[Any]] = set()
        self.total = 0
        self.rejected = 0
        self.ended_ids: OrderedDict[str, None] = OrderedDict()  # recent calls: their URLs never open a call again
        self.pacer = Pacer()  # the one playout clock all the process's calls share

    def __len__(self) -> int:
        return len(self.calls)

    def admission_refusal(self) -> str | None:
        """Why a new call can't be taken now, or None."""
        if self.draining:
            return "draining"
        if len(self.calls) >= self.max_calls:
            return f"at capacity ({self.max_calls} concurrent calls)"
        return None

    def create(self, caller: str = "", call_id: str | None = None) -> Call:
        call = Call(call_id=call_id or secrets.token_hex(16), created_at=time.time(), caller=caller)
        self.calls[call.call_id] = call
        self.total += 1
        return call

    def get(self, call_id: str) -> Call | None:
        return self.calls.get(call_id)

    def spawn(self, coro: Coroutine[Any, Any, Any], call: Call | None = None, name: str | None = None,
              context: contextvars.Context | None = None) -> asyncio.Task[Any]:
        """Run work in the background, keeping a reference until it finishes (RUF006) and logging its failure.
        `context`: the task's contextvars (a call's trace span); default a copy of the current one."""
        task = asyncio.create_task(coro, name=name, context=context)
        owner = call.tasks if call is not None else self.background
        owner.add(task)
        task.add_done_callback(owner.discard)
        return task

    def finish(self, call: Call, reason: str) -> None:
        """Mark the call ended and cancel whatever still runs for it (bridge, Voice Live session)."""
        if not call.ended:
            call.ended = True
            call.end_reason = reason
            log.info("call %s: ended (%s)", call.call_id, reason)
        if call.stop_bridge is not None:
            call.stop_bridge(reason)  # the bridge winds down and calls bridge_finished
        else:
            self._release(call)

    def has_ended(self, call_id: str) -> bool:
        return call_id in self.ended_ids

    def _release(self, call: Call) -> None:
        self.calls.pop(call.call_id, None)
        self.ended_ids[call.call_id] = None
        while len(self.ended_ids) > MAX_ENDED_IDS:
            self.ended_ids.popitem(last=False)
        call.done.set()
        current = asyncio.current_task()
        for task in list(call.tasks):  # e.g. the answer task still watching for the media socket
            if task is not current:
                task.cancel()

    def bridge_finished(self, call: Call, reason: str) -> None:
        if not call.ended:
            call.ended = True
            call.end_reason = reason
        self._release(call)

    async def wait_idle(self) -> None:
        """Wait until no call is live (callers bound it with `asyncio.timeout`)."""
        while self.calls:
            await next(iter(self.calls.values())).done.wait()
