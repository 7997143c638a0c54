"""A simulated caller's script: the text form of ``callbot dial --script FILE`` and the `Turn`s it becomes.

One directive a line, ``#`` starts a comment::

    pause 0.5                         # silence before the next turn
    say what are your opening hours   # speak once the bot has answered the previous turn and gone quiet
    barge-in 1.2 where are you        # speak 1.2 s after the bot's reply starts, over it
    press 1 2 3 #                     (keys of the phone's keypad, one DtmfData message each, 150 ms apart)
    say I want to speak to a person
    expect transfer                   # the call must end with callbot transferring it (or: expect hangup)

On a ``press`` line every ``#`` is the pound key, so it takes no comment. ``expect`` comes last: the script then
waits (bounded) for the call to end that way, and ``dial`` exits 0 only if it did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Literal

KEYS = frozenset("0123456789*#ABCD")
Ending = Literal["transfer", "hangup"]
_ENDINGS: Mapping[str, Ending] = MappingProxyType({"transfer": "transfer", "hangup": "hangup"})


@dataclass(frozen=True)
class Turn:
    text: str  # what the caller says (for recorded audio: a label; for key presses: the keys, spaced)
    audio: bytes | None = None  # recorded audio at the media rate; None: synthesised from ``text``
    pause_s: float = 0.0
    barge_in_s: float | None = None  # speak this long after the bot's reply starts, interrupting it
    keys: str | None = None  # press these keypad keys instead of speaking
    ends_with: Ending | None = None  # the last turn: how the call is expected to end after it


def parse_keys(text: str) -> str:
    """``1 2 3 #`` (or ``123#``) -> ``123#``; ``ValueError`` for anything not on a keypad."""
    keys = "".join(text.split()).upper()
    if not keys:
        raise ValueError("press needs keys (0-9, *, #, A-D)")
    bad = sorted(set(keys) - KEYS)
    if bad:
        raise ValueError(f"press: {' '.join(bad)} is not a keypad key (0-9, *, #, A-D)")
    return keys


def parse_script(text: str) -> list[Turn]:
    """Turns from the text form (see the module docstring); ``ValueError`` names the bad line."""
    turns: list[Turn] = []
    pause = 0.0
    expected: Ending | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        pressing = raw.strip().startswith("press ")
        line = raw.strip() if pressing else raw.split("#", 1)[0].strip()
        if not line:
            continue
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        try:
            if expected is not None:
                raise ValueError("nothing may follow 'expect'")
            if word == "pause":
                pause += float(rest)
            elif word == "say" and rest:
                turns.append(Turn(rest, pause_s=pause))
                pause = 0.0
            elif word == "barge-in":
                delay, _, said = rest.partition(" ")
                if not said.strip():
                    raise ValueError("barge-in needs a delay and what to say")
                turns.append(Turn(said.strip(), pause_s=pause, barge_in_s=float(delay)))
                pause = 0.0
            elif word == "press":
                keys = parse_keys(rest)
                turns.append(Turn(" ".join(keys), pause_s=pause, keys=keys))
                pause = 0.0
            elif word == "expect":
                if rest not in _ENDINGS:
                    raise ValueError("expect takes 'transfer' or 'hangup'")
                if not turns:
                    raise ValueError("expect needs a turn before it")
                expected = _ENDINGS[rest]
            else:
                raise ValueError(f"unknown directive {word!r} (pause, say, barge-in, press, expect)")
        except ValueError as exc:
            raise ValueError(f"script line {number}: {exc}") from None
    if not turns:
        raise ValueError("the script has no turns")
    if expected is not None:
        turns[-1] = replace(turns[-1], ends_with=expected)
    return turns
