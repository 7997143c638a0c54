"""What the agent and the caller do besides talking: function calls, hanging up, transfers, the keypad. Pure, like
the core it is part of (`BridgeCore` inherits it): events in, actions out, time passed in.

Function calls (Voice Live wire: `response.output_item.done` with an item of type `function_call`, `response.done`
listing the response's items):
- an operator tool becomes `RunTool`: the runner runs it off the audio path and hands the output back through
  `tool_result`. The outputs of every call made so far are sent together once all have arrived and the responses that
  made them are done, followed by ONE `response.create` (parallel calls in one response get one answer). A response
  in flight (the caller barged in and the model answered that) defers the answer to its end: no result is lost.
- a tool that takes longer than `hold_after_s` while nothing plays gets the holding line, once per batch: no dead air.
- `end_call`: the call ends like a goodbye: the response that called it plays to its end (a barge-in no longer stops
  it), then HangUp("agent_hung_up"); bounded by `goodbye_timeout_s`.
- `transfer_to_human`: once the calling response is done, the handover line is said (unless that response spoke
  already: the model's own words are the handover); once it has played, `Transfer`.
  `transfer_outcome` ends the bridge without hanging up (accepted: `Leave`) or tells the model why not (failed).
- MCP approval requests are answered with `approve_mcp` (None: refused).
Answered calls are conversation turns: restored (call, then output) after a Voice Live reconnect; calls still
waiting for their output are restored too, so the output sent later refers to an item the new session knows.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from callbot.bridge.actions import Action, Leave, RunTool, Transfer, VlSend
from callbot.bridge.keypad import Keypad
from callbot.bridge.playback import Playback
from callbot.bridge.state import END_CALL, TRANSFER, CoreConfig, Stats, Turn
from callbot.voicelive import session as vl

log = logging.getLogger(__name__)

MAX_SEEN_CALLS = 256
MAX_PENDING_CALLS = 16  # more unanswered calls at once than any model makes: the rest are refused with an error
NO_TRANSFER = '{"error": "transfer to a person is not possible on this call"}'


@dataclass(slots=True)
class FunctionCall:
    call_id: str
    name: str
    arguments: str
    response_id: str
    started_at: float
    output: str | None = None  # built-ins and refusals are answered here at once; operator tools by the runner


class AgentActions:
    if TYPE_CHECKING:  # provided by BridgeCore
        cfg: CoreConfig
        stats: Stats
        turns: list[Turn]
        playback: Playback
        keypad: Keypad
        ready: bool
        ended: bool
        ending_since: float | None
        ending_via: str | None
        goodbye_response: str | None
        end_reason: str
        active_response: str | None
        last_audio_response: str | None
        personal_level: int

        def _say(self, text: str) -> VlSend: ...
        def _barge_in(self, now: float) -> list[Action]: ...
        def playing(self, now: float) -> bool: ...

    def _init_agent(self) -> None:
        self.calls: dict[str, FunctionCall] = {}  # made and not answered yet, in order
        self.seen_calls: OrderedDict[str, None] = OrderedDict()
        self.open_responses: set[str] = set()  # responses that made calls and are not done yet
        self.hold_said = False  # the holding line of the current batch of calls
        self.transfer: FunctionCall | None = None
        self.transfer_state = ""  # "" | "after_response" | "handover" | "requested"
        self.transfer_since = 0.0
        self.handover_response: str | None = None  # "pending" until response.created names it

    # -- keypad ------------------------------------------------------------------------------------------------

    def dtmf(self, now: float, digits: str) -> list[Action]:
        """Key presses: with `dtmf` "model", gathered (bridge.keypad) and sent as one text turn; a key press while
        the bot speaks interrupts it like speech. "off": counted only."""
        self.stats.dtmf += 1
        log.log(self.personal_level, "call %s: DTMF %s", self.cfg.call_id, digits)
        if self.cfg.dtmf != "model" or self.ending_since is not None:
            return []
        actions = self._barge_in(now) if self.keypad.push(now, digits) else []
        actions.extend(self._keys_due(now))
        return actions

    def _keys_due(self, now: float) -> list[Action]:
        if not self.ready:
            return []  # sent once a session is ready again
        text = self.keypad.take(now)
        if text is None:
            return []
        self.stats.dtmf_sequences += 1
        self.turns.append(Turn("caller", text))
        log.log(self.personal_level, "call %s: keypad: %s", self.cfg.call_id, text)
        return [VlSend(vl.user_text(text)), VlSend(vl.create_response())]

    # -- function calls ----------------------------------------------------------------------------------------

    def _output_item(self, now: float, item: dict[str, Any], rid: str) -> list[Action]:
        """A finished output item (from `response.output_item.done`, or listed in `response.done`)."""
        kind = item.get("type")
        if kind == "mcp_approval_request":
            return self._mcp_approval(item)
        if kind != "function_call" or item.get("status") not in (None, "completed"):
            return []
        call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
        if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or call_id in self.seen_calls:
            return []
        self.seen_calls[call_id] = None
        while len(self.seen_calls) > MAX_SEEN_CALLS:
            self.seen_calls.popitem(last=False)
        call = FunctionCall(call_id, name, arguments if isinstance(arguments, str) else "{}", rid, now)
        self.stats.tool_calls += 1
        log.info("call %s: the model calls %s (%s)", self.cfg.call_id, name[:64], call_id[:64])
        log.log(self.personal_level, "call %s: %s arguments: %s", self.cfg.call_id, name, call.arguments)
        if self.ended or self.ending_since is not None:
            return []  # the call is ending: nothing more will be answered
        if name == END_CALL and self.cfg.can_end_call:
            return self._agent_hangs_up(now, rid)
        self.open_responses.add(rid)
        self.calls[call_id] = call
        if len(self.calls) > MAX_PENDING_CALLS:
            call.output = '{"error": "too many function calls at once"}'
            return []
        if name == TRANSFER:
            if not self.cfg.can_transfer or self.transfer is not None:
                call.output = NO_TRANSFER
                return []
            self.transfer, self.transfer_state, self.transfer_since = call, "after_response", now
            self.stats.transfers_requested += 1
            log.info("call %s: transfer to a person requested (reason of %d characters)", self.cfg.call_id,
                     len(_reason(call.arguments)))
            log.log(self.personal_level, "call %s: transfer reason: %s", self.cfg.call_id, _reason(call.arguments))
            return []
        if name == END_CALL:  # offered no longer (CALLBOT_END_CALL_TOOL=off) but called anyway
            call.output = '{"error": "ending the call is not possible"}'
            return []
        return [RunTool(call_id, name, call.arguments)]

    def _agent_hangs_up(self, now: float, rid: str) -> list[Action]:
        """`end_call`: the response that called it plays to its end, then HangUp (the goodbye machinery)."""
        self.stats.agent_hangups += 1
        log.info("call %s: the agent ends the call", self.cfg.call_id)
        self.ending_since, self.end_reason, self.ending_via = now, "agent_hung_up", "model"
        self.goodbye_response = rid if rid == self.active_response else None
        return []

    def tool_result(self, now: float, call_id: str, output: str) -> list[Action]:
        """The runner finished a `RunTool` (output: the tool's answer or `{"error": ...}`)."""
        call = self.calls.get(call_id)
        if call is None or call.output is not None:
            return []
        call.output = output
        log.log(self.personal_level, "call %s: %s output: %s", self.cfg.call_id, call.name, output)
        return self._agent_due(now)

    def _response_finished(self, now: float, rid: str) -> list[Action]:
        self.open_responses.discard(rid)
        if rid == self.handover_response:
            self.handover_response = None
        if self.transfer_state == "after_response" and self.transfer is not None and \
                self.transfer.response_id == rid:
            return self._handover(now)
        return self._agent_due(now)

    def _handover(self, now: float) -> list[Action]:
        self.transfer_state, self.transfer_since = "handover", now
        assert self.transfer is not None
        spoke = self.transfer.response_id == self.last_audio_response  # the model said its own handover words
        if self.cfg.transfer_message and self.ready and not spoke:
            self.handover_response = "pending"
            return [self._say(self.cfg.transfer_message)]
        return self._agent_due(now)

    def transfer_outcome(self, now: float, accepted: bool, detail: str) -> list[Action]:
        """ACS's answer to `Transfer`: accepted ends the bridge (the call is the person's now); failed tells the model
        why, so it can tell the caller and carry on."""
        call = self.transfer
        if call is None or self.transfer_state != "requested" or self.ended:
            return []
        self.transfer, self.transfer_state = None, ""
        if accepted:
            self.stats.transfers_accepted += 1
            log.info("call %s: transferred", self.cfg.call_id)
            self.ended = True
            return [Leave("transferred")]
        self.stats.transfers_failed += 1
        log.warning("call %s: transfer failed: %s", self.cfg.call_id, detail or "no reason given")
        call.output = orjson.dumps({"error": f"the transfer failed: {detail or 'no reason given'}"}).decode()
        return self._agent_due(now)

    def _agent_due(self, now: float) -> list[Action]:
        """What is due now: the transfer after the handover line, the holding line, the batch's answer."""
        if self.ended or not self.ready:
            return []
        quiet = self.active_response is None and not self.playback.queue and not self.playing(now)
        if self.transfer_state == "handover" and (
                (self.handover_response is None and quiet) or now - self.transfer_since >= self.cfg.goodbye_timeout_s):
            assert self.transfer is not None
            self.transfer_state = "requested"
            return [Transfer(_reason(self.transfer.arguments))]
        if not self.calls or self.ending_since is not None:
            return []
        waiting = [c for c in self.calls.values() if c.output is None]
        if waiting:
            if (not self.hold_said and self.cfg.hold_message and quiet and self.cfg.hold_after_s > 0
                    and now - min(c.started_at for c in waiting) >= self.cfg.hold_after_s):
                self.hold_said = True
                self.stats.tool_holds += 1
                return [self._say(self.cfg.hold_message)]
            return []
        if self.open_responses or self.active_response is not None:
            return []  # answered once the response making calls (or the one in flight) is done
        actions: list[Action] = []
        for call in self.calls.values():
            assert call.output is not None
            self.turns.append(Turn("tool", call.output, name=call.name, call_id=call.call_id,
                                   arguments=call.arguments))
            actions.append(VlSend(vl.function_output(call.call_id, call.output)))
        self.calls.clear()
        self.hold_said = False
        actions.append(VlSend(vl.create_response()))
        return actions

    def _agent_deadline(self) -> float | None:
        """When `_agent_due` next has something to do on the clock alone (new input triggers it otherwise). Bot
        audio still queued has deadlines of its own; once it is released, the end of its playing is the deadline."""
        if not self.calls and not self.transfer_state or self.ended or not self.ready:
            return None  # the common case, on every playout wake: nothing of the agent's is waiting
        settled = self.active_response is None and not self.playback.queue
        if self.transfer_state == "handover":
            deadline = self.transfer_since + self.cfg.goodbye_timeout_s
            if self.handover_response is None and settled:
                deadline = min(deadline, self.playback.play_cursor)
            return deadline
        if self.hold_said or not self.cfg.hold_message or self.cfg.hold_after_s <= 0 or self.ending_since is not None:
            return None
        waiting = [c.started_at for c in self.calls.values() if c.output is None]
        if not waiting or not settled:
            return None
        return max(min(waiting) + self.cfg.hold_after_s, self.playback.play_cursor)

    def _mcp_approval(self, item: dict[str, Any]) -> list[Action]:
        request_id, server, name = item.get("id"), item.get("server_label"), item.get("name")
        if not isinstance(request_id, str) or not isinstance(server, str) or not isinstance(name, str):
            return []
        approve = self.cfg.approve_mcp is not None and self.cfg.approve_mcp(server, name)
        self.stats.mcp_approvals += 1
        log.info("call %s: MCP %s/%s %s", self.cfg.call_id, server, name, "approved" if approve else "refused")
        return [VlSend(vl.mcp_approval(request_id, approve))]

    def _restore_calls(self) -> list[Action]:
        """After a reconnect: the calls still waiting for an output exist in the new session too."""
        self.open_responses.clear()
        return [VlSend(vl.function_call_item(c.call_id, c.name, c.arguments)) for c in self.calls.values()]


def _reason(arguments: str) -> str:
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return ""
    reason = parsed.get("reason") if isinstance(parsed, dict) else None
    return reason[:200] if isinstance(reason, str) else ""
