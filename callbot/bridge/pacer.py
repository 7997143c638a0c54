"""One clock for every call's playout in the process (issue 18, design change 2).

Bot audio is paced: each call's core says when its next chunk is due (`BridgeCore.next_deadline`). A timer and a task
wake-up per call per chunk cost more than the chunk's own work, so one `Pacer` per process keeps every call's next
deadline in a heap and fires a single timer on a short grid (`GRID_S`): every call due by then gets its `due()` call,
in one pass of the event loop. A call's `due()` starts its send pass as an eager task (Python 3.12+): a pass whose
writes do not suspend runs to the end inside that call, costing no scheduling at all; one that meets a stalled
socket becomes an ordinary task and delays only its own call (`CallBridge.kick`).

Deadlines are rounded up to the grid: a chunk goes out at most `GRID_S` late, taken from the playout's lead (120 ms
by default), never early. Work that must not wait - the first audio of an answer, StopAudio after a barge-in, a
notice - never goes through the pacer: it is kicked at once by the event that caused it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import sys
from collections.abc import Coroutine
from contextvars import Context
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from callbot.bridge.core import BridgeCore

GRID_S = 0.005  # the timer's grid: chunks are released up to 5 ms late (the lead is >= 20 ms, 120 ms by default)


class Paced(Protocol):
    due_at: float  # loop time of its entry in the heap (inf: none)

    def due(self) -> None: ...


class Pacer:
    """Calls' next deadlines (event-loop time) and the one timer that serves them. Not thread-safe: one per loop."""

    def __init__(self, grid_s: float = GRID_S) -> None:
        self.grid_s = grid_s
        self._heap: list[tuple[float, int, Paced]] = []
        self._order = itertools.count()  # ties in the heap never compare the calls
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self.fires = 0  # timer firings so far (the benchmark's wake-ups; tests)

    def at(self, call: Paced, when: float | None) -> None:
        """`call.due()` at loop time `when` rounded up to the grid (None: never), replacing its earlier deadline."""
        if when is None:
            call.due_at = math.inf  # any entry it has is now stale
            return
        grid = self.grid_s
        when = math.ceil(when / grid) * grid
        if when == call.due_at:
            return
        call.due_at = when
        heapq.heappush(self._heap, (when, next(self._order), call))
        if when < self._timer_at:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._timer_at = when
        self._timer = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        self.fires += 1
        assert self._loop is not None
        horizon = self._loop.time() + self.grid_s / 2  # what rounds to this slot is due now
        heap = self._heap
        due: list[Paced] = []
        while heap and heap[0][0] <= horizon:
            when, _, call = heapq.heappop(heap)
            if call.due_at == when:  # not a stale entry (a later `at` replaced it)
                call.due_at = math.inf
                due.append(call)
        for call in due:
            call.due()  # may call `at` again (its next chunk): new entries are after `horizon`, or armed anew
        while heap and heap[0][2].due_at != heap[0][0]:
            heapq.heappop(heap)  # stale heads would only fire the timer for nothing
        if heap and heap[0][0] < self._timer_at:
            self._arm(heap[0][0])

    def __len__(self) -> int:
        """Entries in the heap, stale ones included (tests: nothing is left behind by ended calls)."""
        return len(self._heap)


def event_moves_playout(core: BridgeCore, had_queue: bool) -> bool:
    """After a Voice Live event: did it give the playout work that must not wait for the grid (audio to pace where
    there was none, a holding line, a handover)? Live, such an event kicks the call's send pass; a replay ticks."""
    return bool((core.queue and not had_queue) or core.calls or core.transfer_state)


if sys.version_info >= (3, 12):
    def start_now(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], context: Context
                  ) -> asyncio.Task[None]:
        """Run `coro` at once, inside the caller, up to its first suspension (an eager task): no scheduling when it
        finishes without waiting."""
        return asyncio.Task(coro, loop=loop, context=context, eager_start=True)
else:  # Python 3.11: no eager tasks; the pass costs one scheduling hop (still no timer of its own)
    def start_now(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], context: Context
                  ) -> asyncio.Task[None]:
        return loop.create_task(coro, context=context)
