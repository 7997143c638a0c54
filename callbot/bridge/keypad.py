"""Caller key presses (DTMF) gathered into one sequence for the model: pure, time passed in.

Keys are collected until the caller pauses (`pause_s`, default 1.5 s) or presses `#`; the sequence then reaches the
model as one text item ("The caller pressed 1 2 3 4 #") followed by a response, so "enter your order number" works
the way callers expect from phone menus.
"""

from __future__ import annotations

DEFAULT_PAUSE_S = 1.5
MAX_KEYS = 64  # a longer sequence is sent as it stands: nobody types more at a phone keypad
KEYS = frozenset("0123456789*#ABCD")


class Keypad:
    def __init__(self, pause_s: float = DEFAULT_PAUSE_S) -> None:
        self.pause_s = pause_s
        self.keys: list[str] = []
        self.last_at: float | None = None
        self.complete = False

    def push(self, now: float, digits: str) -> int:
        """Add key presses (unknown characters are ignored); returns how many were taken."""
        taken = 0
        for key in digits.upper():
            if key in KEYS and not self.complete:
                self.keys.append(key)
                taken += 1
                if key == "#" or len(self.keys) >= MAX_KEYS:
                    self.complete = True
        if taken:
            self.last_at = now
        return taken

    def deadline(self) -> float | None:
        """When the sequence is due (None: no keys waiting)."""
        if not self.keys or self.last_at is None:
            return None
        return self.last_at if self.complete else self.last_at + self.pause_s

    def take(self, now: float) -> str | None:
        """The finished sequence as the model's text, once due; the keypad is then empty."""
        due = self.deadline()
        if due is None or now < due:
            return None
        text = "The caller pressed " + " ".join(self.keys)
        self.keys, self.last_at, self.complete = [], None, False
        return text
