"""The offline responder's function calling: TOOL parts, {digits}, output templates (pure functions)."""

from __future__ import annotations

import json

from callbot.local.voicelive.faq import Responder
from callbot.local.voicelive.faq_tools import (
    CANNOT_DO,
    MAX_SPOKEN_OUTPUT,
    Answer,
    ToolCall,
    digits_in,
    parse_answer,
    parse_templates,
    render_output,
)


def test_tool_parts_become_calls_and_the_rest_is_speech() -> None:
    answer = parse_answer('Let me look. TOOL order_status {"order": "{digits}"} TOOL opening_hours')
    assert answer == Answer("Let me look.", (ToolCall("order_status", {"order": "{digits}"}),
                                             ToolCall("opening_hours", {})))  # fmt: skip
    assert parse_answer("TOOL end_call").calls == (ToolCall("end_call", {}),)
    assert parse_answer('TOOL note {"text": "TOOL x"}').calls == (ToolCall("note", {"text": "TOOL x"}),)


def test_tool_arguments_that_are_broken_json_leave_the_answer_as_written() -> None:
    text = 'Checking. TOOL f {"broken": '
    assert parse_answer(text) == Answer(text)


def test_tool_arguments_that_are_not_an_object_leave_the_answer_as_written() -> None:
    text = "TOOL f [1, 2]"
    assert parse_answer(text) == Answer(text)


def test_digits_come_from_keypad_presses_or_number_words() -> None:
    assert digits_in("The caller pressed 1 2 3 4 #") == "1234"
    assert digits_in("my order is four two seven") == "427"
    assert digits_in("hello") == ""


def test_digits_fill_the_arguments_and_only_declared_tools_are_called() -> None:
    faq = 'Q: Where is my order?\nA: TOOL order_status {"order": "{digits}", "n": 1}\n'
    responder = Responder(faq)
    answer = responder.answer("where is my order one two", {"order_status"})
    assert [(c.name, json.loads(c.arguments_json)) for c in answer.calls] == [("order_status", {"order": "12", "n": 1})]
    assert responder.answer("where is my order", set()) == Answer(CANNOT_DO)


def test_templates_fill_fields_from_json_and_fall_back_when_a_field_is_missing() -> None:
    templates = parse_templates("T: order_status | Order {order} is {status}.\nT: echo | You get {output}.")
    assert render_output("order_status", '{"order": "7", "status": "ready"}', templates) == "Order 7 is ready."
    assert render_output("order_status", '{"order": "7"}', templates) == (
        'The order_status tool says: {"order": "7"}.')
    assert render_output("echo", "plain text", templates) == "You get plain text."
    long = "word " * 100
    spoken = render_output("other", long, templates)
    assert spoken.startswith("The other tool says: word") and len(spoken) < MAX_SPOKEN_OUTPUT + 40


def test_errors_use_the_error_template_or_the_default_and_transfer_has_a_built_in_one() -> None:
    templates = parse_templates("T!: lookup | The lookup failed because {error}.")
    assert render_output("lookup", '{"error": "timeout"}', templates) == "The lookup failed because timeout."
    assert render_output("other", '{"error": "HTTP 500"}', templates) == "Sorry, that did not work: HTTP 500."
    assert render_output("transfer_to_human", '{"error": "busy"}', templates).startswith("I could not transfer you")
