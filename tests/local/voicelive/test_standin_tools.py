"""Function calling in the offline Voice Live stand-in, through the real azure-ai-voicelive SDK."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.ai.voicelive.aio import VoiceLiveConnection, connect
from azure.ai.voicelive.models import (
    ResponseFunctionCallItem,
    ResponseMessageItem,
    ServerEvent,
    ServerEventConversationItemCreated,
    ServerEventError,
    ServerEventResponseCreated,
    ServerEventResponseDone,
    ServerEventResponseFunctionCallArgumentsDelta,
    ServerEventResponseFunctionCallArgumentsDone,
    ServerEventResponseOutputItemAdded,
    ServerEventResponseOutputItemDone,
)

from callbot.config import DEFAULT_INSTRUCTIONS
from callbot.local.speech.asr import normalize_words
from callbot.local.voicelive.faq import GOODBYE, NO_TRANSFER, bot_phrases, caller_phrases
from callbot.local.voicelive.faq_tools import CANNOT_DO, TRANSFER_FAILED, TRANSFER_REASON, TRANSFERRING
from callbot.local.voicelive.standin import Standin
from tests.local.voicelive.test_standin import append, silence, spoken

FAQ = """You answer for Contoso Bakery.
Q: Where is my order? | The caller pressed
A: Let me check that for you. TOOL order_status {"order": "{digits}"}
Q: Is my cake ready and when do you close?
A: TOOL order_status {"order": "7"} TOOL opening_hours
Q: Can you book a table?
A: TOOL book_table {"seats": 2}
T: order_status | Order {order} is {status}.
T!: order_status | I could not find order {order}.
"""
ORDER_STATUS = {"type": "function", "name": "order_status", "description": "Look up an order.",
                "parameters": {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]}}
OPENING_HOURS = {"type": "function", "name": "opening_hours", "parameters": {"type": "object", "properties": {}}}
END_CALL = {"type": "function", "name": "end_call", "parameters": {"type": "object", "properties": {}}}
TRANSFER = {"type": "function", "name": "transfer_to_human",
            "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}}}  # fmt: skip


@pytest.fixture
async def standin() -> AsyncIterator[Standin]:
    async with Standin(FAQ, accept_bearer=True, realtime_factor=0.1) as server:
        yield server


@contextlib.asynccontextmanager
async def session(standin: Standin, tools: list[dict[str, Any]], **config: Any) -> AsyncIterator[VoiceLiveConnection]:
    """A connection with the FAQ, no turn detection (text turns) and ``tools``."""
    async with connect(endpoint=standin.url, credential=standin.credential, model="gpt-realtime") as conn:
        await until(conn, "session.created")
        await conn.send({"type": "session.update", "session": {"instructions": FAQ, "turn_detection": None,
                                                               "tools": tools, **config}})  # fmt: skip
        await until(conn, "session.updated")
        yield conn


async def until(conn: VoiceLiveConnection, type_: str, timeout: float = 20.0) -> list[ServerEvent]:  # noqa: ASYNC109
    """Typed events up to and including the first of ``type_``."""
    events: list[ServerEvent] = []
    async with asyncio.timeout(timeout):
        while True:
            events.append(await conn.recv())
            if events[-1].type == type_:
                return events


async def say(conn: VoiceLiveConnection, text: str) -> list[ServerEvent]:
    """A caller text turn and its response, up to ``response.done``."""
    await conn.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                     "content": [{"type": "input_text", "text": text}]}})  # fmt: skip
    await conn.send({"type": "response.create"})
    return await until(conn, "response.done")


async def output(conn: VoiceLiveConnection, call_id: str, value: Any) -> None:
    text = value if isinstance(value, str) else json.dumps(value)
    await conn.send({"type": "conversation.item.create",
                     "item": {"type": "function_call_output", "call_id": call_id, "output": text}})  # fmt: skip
    await until(conn, "conversation.item.created")


async def reply_to_outputs(conn: VoiceLiveConnection) -> str:
    await conn.send({"type": "response.create"})
    return transcript(await until(conn, "response.done"))


def transcript(events: list[ServerEvent]) -> str:
    return " ".join(e.as_dict()["transcript"] for e in events if e.type == "response.audio_transcript.done")


def calls(events: list[ServerEvent]) -> list[ResponseFunctionCallItem]:
    return [e.item for e in events if isinstance(e, ServerEventResponseOutputItemDone)
            and isinstance(e.item, ResponseFunctionCallItem)]  # fmt: skip


# -- the event sequence --------------------------------------------------------------------------------------------


async def test_tool_answer_speaks_then_streams_the_call_with_argument_deltas_in_service_order(standin: Standin) -> None:
    async with session(standin, [ORDER_STATUS]) as conn:
        events = await say(conn, "The caller pressed 1 2 3 4 #")
    types = [e.type for e in events]
    assert isinstance(events[0], ServerEventConversationItemCreated)  # the user turn
    assert isinstance(events[1], ServerEventResponseCreated)
    speech_done = types.index("response.output_item.done")
    assert types.index("response.audio_transcript.done") < speech_done
    call_events = events[speech_done + 1 :]
    assert [e.type for e in call_events[:2]] == ["response.output_item.added", "conversation.item.created"]
    added = call_events[0]
    assert isinstance(added, ServerEventResponseOutputItemAdded) and isinstance(added.item, ResponseFunctionCallItem)
    assert (added.item.name, added.item.arguments, added.item.status, added.output_index) == (
        "order_status", "", "in_progress", 1)
    deltas = [e for e in call_events if e.type == "response.function_call_arguments.delta"]
    assert len(deltas) > 1 and all(isinstance(d, ServerEventResponseFunctionCallArgumentsDelta) for d in deltas)
    assert {(d.item_id, d.call_id, d.output_index) for d in deltas} == {(added.item.id, added.item.call_id, 1)}
    arguments = "".join(d.delta for d in deltas)
    assert json.loads(arguments) == {"order": "1234"}
    rest = [e.type for e in call_events if e.type != "response.function_call_arguments.delta"]
    assert rest[2:] == ["response.function_call_arguments.done", "response.output_item.done", "response.done"]
    args_done = next(e for e in call_events if isinstance(e, ServerEventResponseFunctionCallArgumentsDone))
    assert (args_done.arguments, args_done.name, args_done.call_id) == (arguments, "order_status",
                                                                        added.item.call_id)  # fmt: skip
    item_done = calls(events)[0]
    assert (item_done.status, item_done.arguments, item_done.call_id) == ("completed", arguments, added.item.call_id)
    done = events[-1]
    assert isinstance(done, ServerEventResponseDone) and done.response.status == "completed"
    message, call = done.response.output
    assert isinstance(message, ResponseMessageItem) and message.content[0].transcript == "Let me check that for you."
    assert isinstance(call, ResponseFunctionCallItem) and call.status == "completed" and call.arguments == arguments


async def test_several_tool_parts_are_parallel_calls_of_one_response(standin: Standin) -> None:
    async with session(standin, [ORDER_STATUS, OPENING_HOURS]) as conn:
        events = await say(conn, "is my cake ready and when do you close")
    made = calls(events)
    assert [(c.name, json.loads(c.arguments)) for c in made] == [("order_status", {"order": "7"}),
                                                                 ("opening_hours", {})]  # fmt: skip
    assert len({c.call_id for c in made}) == 2
    assert [e.output_index for e in events if isinstance(e, ServerEventResponseOutputItemAdded)] == [0, 1]
    assert transcript(events) == "" and sum(e.type == "response.done" for e in events) == 1
    done = events[-1]
    assert isinstance(done, ServerEventResponseDone)
    assert [(i.type, i.status) for i in done.response.output] == [("function_call", "completed")] * 2


# -- outputs spoken back -------------------------------------------------------------------------------------------


async def test_outputs_are_spoken_through_templates_else_the_default_sentence(standin: Standin) -> None:
    async with session(standin, [ORDER_STATUS, OPENING_HOURS]) as conn:
        order, hours = calls(await say(conn, "is my cake ready and when do you close"))
        await output(conn, order.call_id, {"order": "7", "status": "ready for pick up"})
        await output(conn, hours.call_id, "We close at six.")
        spoken_reply = await reply_to_outputs(conn)
    assert spoken_reply == "Order 7 is ready for pick up. The opening_hours tool says: We close at six."


async def test_error_outputs_use_the_error_template_else_say_it_did_not_work(standin: Standin) -> None:
    async with session(standin, [ORDER_STATUS, OPENING_HOURS]) as conn:
        order, hours = calls(await say(conn, "is my cake ready and when do you close"))
        await output(conn, order.call_id, {"error": "not found", "order": "7"})
        await output(conn, hours.call_id, {"error": "timeout"})
        spoken_reply = await reply_to_outputs(conn)
    assert spoken_reply == "I could not find order 7. Sorry, that did not work: timeout."


async def test_response_create_with_an_output_missing_answers_with_what_is_there(standin: Standin) -> None:
    async with session(standin, [ORDER_STATUS, OPENING_HOURS]) as conn:
        _, hours = calls(await say(conn, "is my cake ready and when do you close"))
        await output(conn, hours.call_id, "Open until six.")
        spoken_reply = await reply_to_outputs(conn)
    assert spoken_reply == "The opening_hours tool says: Open until six."


async def test_an_undeclared_tool_is_not_called_and_the_caller_hears_it_cannot_be_done(standin: Standin) -> None:
    async with session(standin, [ORDER_STATUS], tool_choice="auto") as conn:
        undeclared = await say(conn, "can you book a table")
        await conn.send({"type": "session.update", "session": {"tool_choice": "none"}})
        await until(conn, "session.updated")
        choice_none = await say(conn, "where is my order")
    assert calls(undeclared) == [] and transcript(undeclared) == CANNOT_DO
    assert calls(choice_none) == [] and transcript(choice_none) == CANNOT_DO


async def test_an_output_for_an_unknown_call_id_is_an_error_and_the_session_goes_on(standin: Standin) -> None:
    async with session(standin, [ORDER_STATUS]) as conn:
        await conn.send({"type": "conversation.item.create", "event_id": "ev1",
                         "item": {"type": "function_call_output", "call_id": "call_nope", "output": "{}"}})
        error = (await until(conn, "error"))[-1]
        events = await say(conn, "where is my order")
    assert isinstance(error, ServerEventError)
    assert error.error.code == "invalid_tool_call_id" and "call_nope" in error.error.message
    assert error.error.event_id == "ev1"
    assert [c.name for c in calls(events)] == ["order_status"]


async def test_restored_function_call_and_output_items_are_accepted_and_answered(standin: Standin) -> None:
    async with session(standin, [ORDER_STATUS]) as conn:
        question = {"type": "input_text", "text": "where is my order"}
        for item in ({"type": "message", "role": "user", "content": [question]},
                     {"type": "function_call", "call_id": "call_old", "name": "order_status",
                      "arguments": '{"order": "42"}'},
                     {"type": "function_call_output", "call_id": "call_old",
                      "output": '{"order": "42", "status": "on its way"}'}):  # fmt: skip
            await conn.send({"type": "conversation.item.create", "item": item})
            created = (await until(conn, "conversation.item.created"))[-1]
            assert isinstance(created, ServerEventConversationItemCreated) and created.item.type == item["type"]
        spoken_reply = await reply_to_outputs(conn)
        await conn.send({"type": "conversation.item.create", "item": {"type": "function_call", "call_id": "c"}})
        missing = (await until(conn, "error"))[-1]
    assert spoken_reply == "Order 42 is on its way."
    assert isinstance(missing, ServerEventError) and missing.error.param == "item.name"


# -- built-in tools ------------------------------------------------------------------------------------------------


async def test_goodbye_says_goodbye_then_calls_end_call_in_the_same_response(standin: Standin) -> None:
    async with session(standin, [END_CALL]) as conn:
        with_tool = await say(conn, "goodbye")
        await conn.send({"type": "session.update", "session": {"tools": []}})
        await until(conn, "session.updated")
        without = await say(conn, "that is all")
    assert transcript(with_tool) == GOODBYE
    assert [(c.name, c.arguments) for c in calls(with_tool)] == [("end_call", "{}")]
    assert sum(e.type == "response.created" for e in with_tool) == 1
    assert transcript(without) == GOODBYE and calls(without) == []


async def test_asking_for_a_person_transfers_when_declared_and_a_failed_transfer_is_explained(standin: Standin) -> None:
    async with session(standin, [TRANSFER]) as conn:
        events = await say(conn, "can i speak to a human")
        (call,) = calls(events)
        await output(conn, call.call_id, {"error": "the transfer target did not answer"})
        after_failure = await reply_to_outputs(conn)
        await conn.send({"type": "session.update", "session": {"tools": [ORDER_STATUS]}})
        await until(conn, "session.updated")
        undeclared = await say(conn, "can i speak to someone")
    assert transcript(events) == TRANSFERRING
    assert call.name == "transfer_to_human" and json.loads(call.arguments) == {"reason": TRANSFER_REASON}
    assert after_failure == TRANSFER_FAILED
    assert transcript(undeclared) == NO_TRANSFER and calls(undeclared) == []


async def test_the_sample_faq_transfers_a_spoken_request_for_a_person(standin: Standin) -> None:
    turn = {"type": "server_vad", "silence_duration_ms": 500}
    async with session(standin, [TRANSFER], instructions=DEFAULT_INSTRUCTIONS, turn_detection=turn) as conn:
        await append(conn, silence(500) + spoken("i want to speak to a human") + silence(800))
        events = await until(conn, "response.done")
    assert [c.name for c in calls(events)] == ["transfer_to_human"], transcript(events)
    assert transcript(events) == TRANSFERRING


def test_the_vocabularies_know_the_new_sentences() -> None:
    assert "I want to speak to a person" in caller_phrases(DEFAULT_INSTRUCTIONS)
    said = bot_phrases(DEFAULT_INSTRUCTIONS)  # its FAQ calls transfer_to_human
    assert {TRANSFERRING, TRANSFER_FAILED, CANNOT_DO} <= set(said)
    assert ["order", "is"] in [normalize_words(p) for p in bot_phrases(FAQ)]  # "Order {order} is {status}."
    plain = "Q: Do you deliver?\nA: Yes.\n"
    assert not {TRANSFERRING, TRANSFER_FAILED, CANNOT_DO} & set(bot_phrases(plain))  # no tools: no tool sentences
    assert {TRANSFERRING, TRANSFER_FAILED} <= set(bot_phrases(plain, tools={"transfer_to_human"}))


# -- cancel and truncate -------------------------------------------------------------------------------------------


async def test_cancel_during_the_speech_of_a_tool_answer_makes_no_call(standin: Standin) -> None:
    async with session(standin, [ORDER_STATUS]) as conn:
        await conn.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                         "content": [{"type": "input_text", "text": "where is my order"}]}})  # fmt: skip
        await conn.send({"type": "response.create"})
        await until(conn, "response.audio.delta")
        await conn.send({"type": "response.cancel"})
        events = await until(conn, "response.done")
    done = events[-1]
    assert isinstance(done, ServerEventResponseDone) and done.response.status == "cancelled"
    assert all(i.type != "function_call" or i.status != "completed" for i in done.response.output)
    assert not any(e.type == "response.function_call_arguments.done" for e in events)


async def test_a_function_call_item_cannot_be_truncated(standin: Standin) -> None:
    async with session(standin, [ORDER_STATUS]) as conn:
        (call,) = calls(await say(conn, "where is my order"))
        await conn.send({"type": "conversation.item.truncate", "item_id": call.id, "content_index": 0,
                         "audio_end_ms": 0})  # fmt: skip
        error = (await until(conn, "error"))[-1]
    assert isinstance(error, ServerEventError) and error.error.param == "item_id"
    assert "Only model output audio messages can be truncated" in error.error.message


# -- session tools -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tools", "choice", "param"), [
    ([{"type": "function", "name": "has space"}], None, "session.tools[0].name"),
    ([{"type": "function", "name": "x" * 65}], None, "session.tools[0].name"),
    ([{"type": "function", "description": "no name"}], None, "session.tools[0].name"),
    ([{"type": "function", "name": "f", "parameters": {"type": "string"}}], None, "session.tools[0].parameters"),
    ([{"type": "function", "name": "f", "parameters": {"type": "object", "properties": 5}}], None,
     "session.tools[0].parameters"),
    ([{"type": "function", "name": "f", "parameters": "{}"}], None, "session.tools[0].parameters"),
    ([{"type": "function", "name": "f", "strict": True}], None, "session.tools[0].strict"),
    ([ORDER_STATUS, ORDER_STATUS], None, "session.tools[1].name"),
    ([{"type": "code_interpreter"}], None, "session.tools[0].type"),
    ([{"type": "mcp", "server_label": "kb"}], None, "session.tools[0].server_url"),
    ({"type": "function"}, None, "session.tools"),
    ([ORDER_STATUS], {"type": "function", "name": "end_call"}, "session.tool_choice"),
    ([ORDER_STATUS], "sometimes", "session.tool_choice"),
])  # fmt: skip
async def test_invalid_tools_are_an_error_and_the_session_stays_usable(
    standin: Standin, tools: Any, choice: Any, param: str
) -> None:
    async with session(standin, []) as conn:
        await conn.send({"type": "session.update", "session": {"tools": tools, "tool_choice": choice}})
        error = (await until(conn, "error"))[-1]
        events = await say(conn, "where is my order")
    assert isinstance(error, ServerEventError) and error.error.param == param, error.error.message
    assert transcript(events) == CANNOT_DO  # the bad update changed nothing: no tools


async def test_mcp_tools_and_a_function_tool_choice_are_accepted_and_kept(standin: Standin) -> None:
    mcp = {"type": "mcp", "server_label": "kb", "server_url": "https://kb.example.com/mcp",
           "allowed_tools": ["search"], "headers": {"Authorization": "Bearer x"}, "require_approval": "never"}
    choice = {"type": "function", "name": "order_status"}
    async with session(standin, []) as conn:
        await conn.send({"type": "session.update", "session": {"tools": [mcp, ORDER_STATUS], "tool_choice": choice}})
        updated = (await until(conn, "session.updated"))[-1].as_dict()
    assert updated["session"]["tools"] == [mcp, ORDER_STATUS]
    assert updated["session"]["tool_choice"] == choice
