"""Function calling for the offline responder: ``TOOL`` parts in FAQ answers and templates for tool outputs.

Not a language model: what it calls and what it says about the results is written in the instructions.

* An answer may call tools: ``A: Let me check that for you. TOOL order_status {"order": "{digits}"}``. Each
  ``TOOL <name> <JSON object>`` part (arguments optional, default ``{}``) is one function call; several parts are
  parallel calls in one response; the rest of the answer is spoken first. In the arguments' string values
  ``{digits}`` becomes the digits of the caller's turn (keypad presses, "The caller pressed 1 2 3 #", or spoken
  number words, "one two three"; empty when there are none).
* The outputs are spoken through template lines: ``T: <tool name> | <sentence>`` with ``{field}`` taken from a JSON
  object output or ``{output}`` for the whole text; ``T!: <tool name> | <sentence>`` for an error output
  (``{"error": "..."}``). Without an error template: `TOOL_FAILED`; without a template (or when a field is
  missing): `TOOL_SAYS`, the output shortened to `MAX_SPOKEN_OUTPUT` characters.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from callbot.local.speech.asr import normalize_words

log = logging.getLogger(__name__)

CANNOT_DO = "Sorry, I cannot do that on this line."
TOOL_FAILED = "Sorry, that did not work: {error}."
TOOL_SAYS = "The {name} tool says: {output}."
TRANSFERRING = "One moment please, I will put you through to a colleague."
TRANSFER_FAILED = "I could not transfer you right now. Can I help with something else?"
TRANSFER_REASON = "the caller asked for a person"
MAX_SPOKEN_OUTPUT = 120
BUILTIN_TEMPLATES = "T!: transfer_to_human | " + TRANSFER_FAILED
"""Template lines that apply unless the instructions have their own for the same tool."""

_TOOL = re.compile(r"\bTOOL\s+([A-Za-z0-9_-]{1,64})(?![A-Za-z0-9_-])")
_TEMPLATE = re.compile(r"^\s*(?:[-*]\s*)?T(!?)\s*:\s*([A-Za-z0-9_-]{1,64})\s*\|\s*(.+?)\s*$")
_FIELD = re.compile(r"\{([A-Za-z0-9_]+)\}")
_NUMBER_WORDS: Mapping[str, str] = MappingProxyType({"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                                                    "five": "5", "six": "6", "seven": "7", "eight": "8",
                                                    "nine": "9"})  # fmt: skip


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(", ", ": "))


@dataclass(frozen=True)
class Answer:
    """What the responder does for a turn: say ``speech`` (may be empty), then make ``calls``; ``unavailable``:
    what to say instead when the session declares none of the tools (``None``: say that it cannot be done)."""

    speech: str
    calls: tuple[ToolCall, ...] = ()
    unavailable: str | None = None


def parse_answer(text: str) -> Answer:
    """Split an FAQ answer into its speech and its ``TOOL`` parts. A part whose arguments are not a JSON object
    makes the whole answer plain speech (logged), so that the mistake is heard rather than hidden."""
    calls: list[ToolCall] = []
    speech: list[str] = []
    position = 0
    decoder = json.JSONDecoder()
    for match in _TOOL.finditer(text):
        if match.start() < position:
            continue  # "TOOL" inside the JSON arguments of the part before
        speech.append(text[position : match.start()])
        position = match.end()
        rest = text[position:]
        arguments: Any = {}
        if rest.lstrip().startswith(("{", "[")):
            skipped = len(rest) - len(rest.lstrip())
            try:
                arguments, end = decoder.raw_decode(rest, skipped)
            except json.JSONDecodeError:
                arguments, end = None, 0
            if not isinstance(arguments, dict):
                log.warning("FAQ answer: the arguments of TOOL %s are not a JSON object; answer spoken as written",
                            match.group(1))  # fmt: skip
                return Answer(text)
            position += end
        calls.append(ToolCall(match.group(1), arguments))
    speech.append(text[position:])
    return Answer(" ".join(" ".join(speech).split()), tuple(calls))


def digits_in(text: str) -> str:
    """The digits of a caller turn: digits as typed (keypad) or spoken as number words."""
    return "".join(_NUMBER_WORDS.get(word, word) for word in normalize_words(text) if is_number(word))


def is_number(word: str) -> bool:
    """A normalised word that is digits or a number word (zero to nine)."""
    return word.isdigit() or word in _NUMBER_WORDS


def substitute(arguments: Any, digits: str) -> Any:
    """``arguments`` with ``{digits}`` replaced in every string value."""
    if isinstance(arguments, str):
        return arguments.replace("{digits}", digits)
    if isinstance(arguments, dict):
        return {k: substitute(v, digits) for k, v in arguments.items()}
    if isinstance(arguments, list):
        return [substitute(v, digits) for v in arguments]
    return arguments


@dataclass(frozen=True)
class Templates:
    """``T:`` (``ok``) and ``T!:`` (``error``) template sentences by tool name."""

    ok: Mapping[str, str]
    error: Mapping[str, str]
    own: frozenset[str] = frozenset()  # tools with a template line in the instructions (not only built in)

    def sentences(self, tools: Iterable[str]) -> list[str]:
        """The sentences the outputs of ``tools`` and of the instructions' templates can give, fields removed
        (for a recogniser's vocabulary); none when neither has any."""
        names = set(tools) | self.own
        if not names:
            return []
        found = [t for n in sorted(names) for t in (self.ok.get(n), self.error.get(n)) if t]
        return [" ".join(_FIELD.sub(" ", s).split()) for s in [*found, TOOL_FAILED, TOOL_SAYS]]


def parse_templates(instructions: str) -> Templates:
    """The ``T:`` / ``T!:`` lines of ``instructions``, over `BUILTIN_TEMPLATES`."""
    ok: dict[str, str] = {}
    error: dict[str, str] = {}
    own: set[str] = set()
    builtin = BUILTIN_TEMPLATES.splitlines()
    for number, line in enumerate([*builtin, *instructions.splitlines()]):
        match = _TEMPLATE.match(line)
        if match:
            (error if match.group(1) else ok)[match.group(2)] = match.group(3)
            if number >= len(builtin):
                own.add(match.group(2))
    return Templates(ok, error, frozenset(own))


def render_output(name: str, output: str, templates: Templates) -> str:
    """The sentence spoken for one function output (see the module docstring)."""
    try:
        value: Any = json.loads(output)
    except ValueError:
        value = None
    fields: dict[str, Any] = dict(value) if isinstance(value, dict) else {}
    fields["output"] = output
    if isinstance(value, dict) and "error" in value:
        template = templates.error.get(name)
        sentence = _fill(template, fields) if template else None
        return sentence or TOOL_FAILED.format(error=_shorten(_spoken(value["error"])))
    template = templates.ok.get(name)
    sentence = _fill(template, fields) if template else None
    return sentence or TOOL_SAYS.format(name=name, output=_shorten(output))


def render_outputs(results: Iterable[tuple[str, str]], templates: Templates) -> str:
    """The reply to several outputs of one response, in call order."""
    return " ".join(render_output(name, output, templates) for name, output in results)


def _fill(template: str, fields: Mapping[str, Any]) -> str | None:
    """``template`` with its ``{field}`` parts filled; ``None`` when a field is missing."""
    missing = [f for f in _FIELD.findall(template) if f not in fields]
    if missing:
        return None
    return _FIELD.sub(lambda m: _shorten(_spoken(fields[m.group(1)])), template)


def _spoken(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _shorten(text: str, limit: int = MAX_SPOKEN_OUTPUT) -> str:
    text = " ".join(text.split()).rstrip(".")
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + " and so on"
