"""The simulated caller's script: key presses (where # is a key), expected endings, clear errors per line."""

from __future__ import annotations

import pytest

from callbot.local.caller.script import Turn, parse_keys, parse_script


def test_press_lines_take_keypad_keys_and_every_hash_is_the_pound_key() -> None:
    turns = parse_script("say hello  # greeting\npause 0.5\npress 1 2 3 #\npress *9#\n")
    assert turns == [Turn("hello"), Turn("1 2 3 #", pause_s=0.5, keys="123#"), Turn("* 9 #", keys="*9#")]


def test_expect_marks_how_the_call_must_end_after_the_last_turn() -> None:
    turns = parse_script("say I want to speak to a person\nexpect transfer  # the bot hands over\n")
    assert turns == [Turn("I want to speak to a person", ends_with="transfer")]
    assert parse_script("press 0\nexpect hangup")[-1].ends_with == "hangup"


@pytest.mark.parametrize(("script", "problem"), [
    ("press", "line 1: press needs keys"),
    ("press 1 x 2", "line 1: press: X is not a keypad key"),
    ("expect transfer", "line 1: expect needs a turn before it"),
    ("say hi\nexpect goodbye", "line 2: expect takes 'transfer' or 'hangup'"),
    ("say hi\nexpect hangup\nsay more", "line 3: nothing may follow 'expect'"),
])
def test_bad_press_and_expect_lines_are_named(script: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_script(script)


def test_keys_may_be_written_together_or_apart() -> None:
    assert parse_keys("1 2 3 #") == parse_keys("123#") == "123#"
    assert parse_keys("a b") == "AB"
