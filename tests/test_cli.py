"""The command line: every command and option says what it does."""

from __future__ import annotations

import argparse

from callbot.cli import build_parser


def test_every_command_and_option_has_a_description() -> None:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert {"serve", "demo", "dial", "replay", "export-wav", "bench"} <= set(sub.choices)
    undocumented = [f"{name} {'/'.join(action.option_strings) or action.dest}"
                    for name, command in sub.choices.items() for action in command._actions
                    if not isinstance(action, argparse._HelpAction) and not action.help]
    assert undocumented == []
