"""Key presses: gathered until a pause or `#`, sent to the model as one text turn; a key press interrupts the bot."""

from __future__ import annotations

from typing import Any

from callbot.bridge.core import StopPlayback
from callbot.bridge.keypad import Keypad
from tests.bridge.test_core import delta, make_core, ready, run_clock, start_response, vl_events


def texts(actions: list[Any]) -> list[str]:
    return [e["item"]["content"][0]["text"] for e in vl_events(actions) if e["type"] == "conversation.item.create"]


def test_keys_are_gathered_until_the_caller_pauses_then_sent_as_one_turn_and_a_response() -> None:
    core = make_core()
    ready(core)
    for i, key in enumerate("1234"):
        assert texts(core.dtmf(0.5 * i, key)) == []
    assert core.next_deadline() == 1.5 + 1.5
    out = [a for _, a in run_clock(core, 1.6, 3.1, step=0.01)]
    assert texts(out) == ["The caller pressed 1 2 3 4"]
    assert [e["type"] for e in vl_events(out)] == ["conversation.item.create", "response.create"]
    assert core.turns[-1].text == "The caller pressed 1 2 3 4", "restored after a reconnect like speech"
    assert core.stats.dtmf == 4 and core.stats.dtmf_sequences == 1


def test_hash_ends_the_sequence_at_once() -> None:
    core = make_core()
    ready(core)
    core.dtmf(0.0, "4")
    assert texts(core.dtmf(0.2, "2#")) == ["The caller pressed 4 2 #"]


def test_a_key_press_while_the_bot_speaks_interrupts_it() -> None:
    core = make_core(lead_ms=100)
    ready(core)
    start_response(core, 0.0)
    delta(core, 0.0, 2000)
    run_clock(core, 0.0, 0.5)
    actions = core.dtmf(0.5, "1")
    assert isinstance(actions[0], StopPlayback)
    assert [e["type"] for e in vl_events(actions)] == ["response.cancel", "conversation.item.truncate"]


def test_keys_pressed_while_no_session_is_ready_are_sent_once_it_is() -> None:
    core = make_core()
    core.dtmf(0.0, "9#")
    assert core.next_deadline() is not None  # the max-duration deadline only
    assert texts(ready(core, 1.0)) == ["The caller pressed 9 #"]


def test_with_dtmf_off_key_presses_are_counted_and_ignored() -> None:
    core = make_core(dtmf="off")
    ready(core)
    assert core.dtmf(0.0, "5#") == []
    assert core.stats.dtmf == 1 and core.keypad.keys == []


def test_unknown_characters_are_ignored_and_a_long_sequence_is_sent_as_it_stands() -> None:
    keypad = Keypad(pause_s=1.0)
    assert keypad.push(0.0, "x!") == 0 and keypad.deadline() is None
    keypad.push(0.0, "1" * 70)
    assert keypad.deadline() == 0.0 and keypad.take(0.0) == "The caller pressed " + " ".join("1" * 64)
