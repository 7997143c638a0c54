"""The agent's actions in the call core: function calls, holding line, end_call, transfer_to_human, MCP approvals and
their turns across a reconnect, on a virtual clock (pure: events in, actions out)."""

from __future__ import annotations

from typing import Any

import orjson

from callbot.bridge.actions import HangUp, Leave, RunTool, Transfer
from callbot.bridge.agent import NO_TRANSFER
from callbot.bridge.core import BridgeCore, CoreConfig
from callbot.bridge.state import builtin_tools
from callbot.config import Settings
from tests.bridge.test_core import delta, make_core, ready, run_clock, start_response, vl_events


def call_item(call_id: str, name: str, arguments: str = "{}", item_id: str | None = None) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id or f"item_{call_id}", "call_id": call_id, "name": name,
            "arguments": arguments, "status": "completed"}


def call_done(core: BridgeCore, now: float, rid: str, *items: dict[str, Any]) -> list[Any]:
    """The service's end of a response that made function calls: output_item.done for each, then response.done."""
    actions: list[Any] = []
    for item in items:
        actions += core.server_event(now, {"type": "response.output_item.done", "response_id": rid, "item": item})
    actions += response_done(core, now, rid, *items)
    return actions


def response_done(core: BridgeCore, now: float, rid: str, *items: dict[str, Any]) -> list[Any]:
    return core.server_event(now, {"type": "response.done",
                                   "response": {"id": rid, "status": "completed", "output": list(items)}})


def created(core: BridgeCore, now: float, rid: str) -> list[Any]:
    return core.server_event(now, {"type": "response.created", "response": {"id": rid}})


def types(actions: list[Any]) -> list[str]:
    return [e["type"] if e["type"] != "conversation.item.create" else e["item"]["type"] for e in vl_events(actions)]


def outputs(actions: list[Any]) -> dict[str, str]:
    return {e["item"]["call_id"]: e["item"]["output"] for e in vl_events(actions)
            if e["type"] == "conversation.item.create" and e["item"]["type"] == "function_call_output"}


def said(actions: list[Any]) -> list[str]:
    return [e["response"]["pre_generated_assistant_message"]["content"][0]["text"] for e in vl_events(actions)
            if e["type"] == "response.create" and "response" in e]


def test_an_operator_tool_call_runs_and_its_output_is_answered_with_one_response_after_the_response_is_done() -> None:
    core = make_core()
    ready(core)
    created(core, 0.0, "r1")
    item = call_item("call_1", "order_status", '{"order": "42"}')
    actions = core.server_event(0.1, {"type": "response.output_item.done", "response_id": "r1", "item": item})
    assert actions == [RunTool("call_1", "order_status", '{"order": "42"}')], "started as soon as the item is done"
    assert core.tool_result(0.2, "call_1", '{"status": "shipped"}') == [], "the response making it is not done"
    actions = response_done(core, 0.3, "r1", item)
    assert types(actions) == ["function_call_output", "response.create"]
    assert outputs(actions) == {"call_1": '{"status": "shipped"}'}
    assert core.turns[-1].role == "tool" and core.turns[-1].name == "order_status"


def test_parallel_calls_of_one_response_are_all_answered_before_one_response_create() -> None:
    core = make_core()
    ready(core)
    created(core, 0.0, "r1")
    a, b = call_item("a", "weather"), call_item("b", "order_status")
    started = call_done(core, 0.1, "r1", a, b)
    assert [x.call_id for x in started if isinstance(x, RunTool)] == ["a", "b"]
    assert core.tool_result(0.2, "b", "B") == [], "one output of two: wait"
    actions = core.tool_result(0.3, "a", "A")
    assert types(actions) == ["function_call_output", "function_call_output", "response.create"]
    assert outputs(actions) == {"a": "A", "b": "B"}


def test_a_call_listed_only_in_response_done_is_run_once() -> None:
    core = make_core()
    ready(core)
    created(core, 0.0, "r1")
    item = call_item("c", "weather")
    first = response_done(core, 0.1, "r1", item)
    assert [a for a in first if isinstance(a, RunTool)] == [RunTool("c", "weather", "{}")]
    again = core.server_event(0.2, {"type": "response.output_item.done", "response_id": "r1", "item": item})
    assert again == [], "a call id is run once"


def test_a_barge_in_while_a_tool_runs_keeps_its_result_for_after_the_new_response() -> None:
    core = make_core()
    ready(core)
    created(core, 0.0, "r1")
    call_done(core, 0.1, "r1", call_item("c", "order_status"))
    core.server_event(0.5, {"type": "input_audio_buffer.speech_started"})
    created(core, 1.0, "r2")  # the model answers what the caller said meanwhile
    assert core.tool_result(1.1, "c", "shipped") == [], "no response.create while one is in flight"
    actions = response_done(core, 1.5, "r2")
    assert outputs(actions) == {"c": "shipped"} and types(actions)[-1] == "response.create"


def test_a_slow_tool_gets_the_holding_line_once_when_nothing_plays() -> None:
    core = make_core(hold_message="One moment please.", hold_after_s=1.5)
    ready(core)
    created(core, 0.0, "r1")
    call_done(core, 0.1, "r1", call_item("c", "slow"))
    assert core.next_deadline() is not None and abs(core.next_deadline() - 1.6) < 1e-9
    timeline = run_clock(core, 0.1, 3.0, step=0.01)
    holds = [t for t, a in timeline if said([a]) == ["One moment please."]]
    assert len(holds) == 1 and 1.6 <= holds[0] < 1.62
    created(core, 1.7, "hold")
    assert core.tool_result(2.0, "c", "done") == [], "the holding line is in flight"
    assert outputs(response_done(core, 2.5, "hold")) == {"c": "done"}


def test_no_holding_line_for_a_quick_tool_or_while_the_bot_speaks() -> None:
    core = make_core(hold_message="One moment please.", hold_after_s=1.5)
    ready(core)
    start_response(core, 0.0, "r1", "item_1")
    delta(core, 0.0, 3000, "r1", "item_1")  # 3 s of speech in the calling response
    call_done(core, 0.1, "r1", call_item("c", "slow"))
    early = run_clock(core, 0.1, 2.9, step=0.01)
    assert not any(said([a]) for _, a in early), "the bot is still speaking: no dead air to fill"
    late = run_clock(core, 2.91, 5.0, step=0.01)
    assert [t for t, a in late if said([a])] and min(t for t, a in late if said([a])) >= 3.0


def test_end_call_lets_the_sentence_finish_then_hangs_up_and_a_barge_in_does_not_cut_it() -> None:
    core = make_core()
    ready(core)
    start_response(core, 0.0, "r1", "item_1")
    delta(core, 0.0, 1000, "r1", "item_1")  # "Goodbye!" — one second
    core.server_event(0.05, {"type": "response.output_item.done", "response_id": "r1",
                             "item": call_item("e", "end_call")})
    assert core.server_event(0.2, {"type": "input_audio_buffer.speech_started"}) == []
    response_done(core, 0.3, "r1")
    timeline = run_clock(core, 0.0, 2.0)
    hang = [t for t, a in timeline if isinstance(a, HangUp)]
    assert hang and hang[0] >= 1.0 and timeline[-1][0] <= 2.0
    assert [a.reason for _, a in timeline if isinstance(a, HangUp)] == ["agent_hung_up"]
    played = sum(len(a.pcm) for _, a in timeline if hasattr(a, "pcm"))
    assert played == 1000 * 48, "all of the last sentence is played"
    assert core.stats.agent_hangups == 1


def test_end_call_is_bounded_when_the_audio_never_ends() -> None:
    core = make_core(goodbye_timeout_s=2.0)
    ready(core)
    created(core, 0.0, "r1")
    core.server_event(0.05, {"type": "response.output_item.done", "response_id": "r1",
                             "item": call_item("e", "end_call")})
    timeline = run_clock(core, 0.0, 3.0, step=0.01)
    hang = [t for t, a in timeline if isinstance(a, HangUp)]
    assert len(hang) == 1 and 2.05 - 1e-6 <= hang[0] <= 2.07


def transfer_core(**kw: Any) -> BridgeCore:
    kw.setdefault("transfer_message", "Please hold while I transfer you.")
    core = make_core(can_transfer=True, **kw)
    ready(core)
    return core


def test_transfer_says_the_handover_line_after_the_response_then_transfers_once_it_has_played() -> None:
    core = transfer_core()
    created(core, 0.0, "r1")
    item = call_item("t", "transfer_to_human", '{"reason": "asked for a person"}')
    handover = call_done(core, 0.1, "r1", item)
    assert said(handover) == ["Please hold while I transfer you."]
    start_response(core, 0.2, "r2", "item_2")
    delta(core, 0.2, 500, "r2", "item_2")
    response_done(core, 0.3, "r2")
    timeline = run_clock(core, 0.2, 1.5)
    transfers = [(t, a) for t, a in timeline if isinstance(a, Transfer)]
    assert len(transfers) == 1 and transfers[0][1].reason == "asked for a person"
    assert transfers[0][0] >= 0.7, "after the handover line has played"
    assert core.transfer_outcome(2.0, True, "") == [Leave("transferred")]
    assert core.ended and core.stats.transfers_accepted == 1


def test_caller_audio_after_an_accepted_transfer_no_longer_goes_to_the_model() -> None:
    core = transfer_core(transfer_message="")
    created(core, 0.0, "r1")
    call_done(core, 0.1, "r1", call_item("t", "transfer_to_human"))
    frame = "AAAA"  # the core forwards caller audio as it came
    assert types(core.caller_audio(0.2, frame)) == ["input_audio_buffer.append"], "still ours while it rings"
    assert core.transfer_outcome(0.5, True, "") == [Leave("transferred")]
    assert core.caller_audio(0.52, frame) == [], "the call is the person's now (a frame read before the bridge stops)"


def test_a_failed_transfer_is_told_to_the_model_with_the_reason() -> None:
    core = transfer_core(transfer_message="")
    created(core, 0.0, "r1")
    actions = call_done(core, 0.1, "r1", call_item("t", "transfer_to_human"))
    assert [a for a in actions if isinstance(a, Transfer)] == [Transfer("")], "no handover line: at once"
    actions = core.transfer_outcome(0.5, False, "the number is busy")
    assert orjson.loads(outputs(actions)["t"]) == {"error": "the transfer failed: the number is busy"}
    assert types(actions)[-1] == "response.create" and not core.ended
    assert core.stats.transfers_failed == 1


def test_transfer_where_it_is_not_possible_answers_the_model_at_once() -> None:
    core = make_core(can_transfer=False)
    ready(core)
    created(core, 0.0, "r1")
    actions = call_done(core, 0.1, "r1", call_item("t", "transfer_to_human"))
    assert outputs(actions) == {"t": NO_TRANSFER}
    assert not any(isinstance(a, Transfer) for a in actions)


def test_tool_turns_and_waiting_calls_are_restored_after_a_reconnect() -> None:
    core = make_core()
    ready(core)
    created(core, 0.0, "r1")
    call_done(core, 0.1, "r1", call_item("a", "weather", '{"city": "Oslo"}'))
    core.tool_result(0.2, "a", "sunny")
    created(core, 0.3, "r2")
    call_done(core, 0.4, "r2", call_item("b", "order_status"))
    core.session_lost(0.5)
    restored = vl_events(core.session_opened(0.6))
    items = [e["item"] for e in restored if e["type"] == "conversation.item.create"]
    assert items == [
        {"type": "function_call", "call_id": "a", "name": "weather", "arguments": '{"city": "Oslo"}'},
        {"type": "function_call_output", "call_id": "a", "output": "sunny"},
        {"type": "function_call", "call_id": "b", "name": "order_status", "arguments": "{}"},
    ]
    ready(core, 0.7)
    assert outputs(core.tool_result(0.8, "b", "shipped")) == {"b": "shipped"}, "answered in the new session"


def test_mcp_approval_requests_are_answered_as_the_operator_configured() -> None:
    core = make_core(approve_mcp=lambda server, name: server == "kb" and name == "search")
    ready(core)
    for request_id, server, name, approve in (("m1", "kb", "search", True), ("m2", "kb", "delete", False)):
        actions = core.server_event(0.1, {"type": "response.output_item.done", "response_id": "r", "item": {
            "type": "mcp_approval_request", "id": request_id, "server_label": server, "name": name}})
        assert [e["item"] for e in vl_events(actions)] == [
            {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": approve}]


def test_the_session_offers_end_call_always_transfer_where_possible_and_the_operators_tools() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    order = {"type": "function", "name": "order_status", "description": "d", "parameters": {"type": "object"}}
    web = CoreConfig.from_settings("c", settings, transport="web", tools=[order])
    assert [t["name"] for t in web.session["tools"]] == ["end_call", "order_status"]
    acs = CoreConfig.from_settings("c", settings, can_transfer=True)
    assert [t["name"] for t in acs.session["tools"]] == ["end_call", "transfer_to_human"]
    assert acs.session["tool_choice"] == "auto"
    assert builtin_tools(False, False) == []


def test_no_handover_line_when_the_model_spoke_in_the_response_that_asked_for_the_transfer() -> None:
    core = transfer_core()
    start_response(core, 0.0, "r1", "item_1")
    delta(core, 0.0, 300, "r1", "item_1")  # "Sure, I will put you through."
    actions = call_done(core, 0.1, "r1", call_item("t", "transfer_to_human"))
    assert said(actions) == [], "the model's own words are the handover"
    transfers = [(t, a) for t, a in run_clock(core, 0.1, 1.0) if isinstance(a, Transfer)]
    assert len(transfers) == 1 and transfers[0][0] >= 0.3, "after the model's words have played"
