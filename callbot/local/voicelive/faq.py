"""The offline stand-in's deterministic responder: a FAQ table read from the instructions, plus small talk.

This is not a language model. It answers a caller's turn with a sentence built from what was recognised and
the configured instructions:

* FAQ entries in the instructions, as ``Q:`` / ``A:`` line pairs (alternative phrasings of a question separated
  by ``|``)::

      Q: What are your opening hours? | When are you open?
      A: We are open from seven in the morning to six in the evening, Monday to Saturday.

  A turn is answered with the entry whose question shares the most words with it (word overlap, a few
  filler words and numbers ignored; at least half of the words must match).
  With the default prompt (``CALLBOT_INSTRUCTIONS`` unset), which has no FAQ, the responder answers from
  `SAMPLE_FAQ` (a bakery's: opening hours, delivery, where it is, gluten free bread), so that ``callbot serve``
  and ``callbot dial`` give real answers out of the box; any other prompt is used as written.
* Otherwise a fixed small-talk reply (hello, thanks, goodbye, yes/no, asking for a human), else
  ``"You said: <what was recognised>."``; nothing recognised gives a request to repeat.
* Function calling (:mod:`callbot.local.voicelive.faq_tools`): answers may call tools (``TOOL <name> <JSON arguments>``)
  and ``T:`` / ``T!:`` template lines say what their outputs mean. Only tools the session declares are called:
  an answer whose tools are all undeclared is replaced by `CANNOT_DO` (`NO_TRANSFER` for ``transfer_to_human``).
  Built in, when the session declares them: asking for a human calls ``transfer_to_human`` (after
  `TRANSFERRING`), goodbye calls ``end_call`` (after `GOODBYE`, in the same response).

The same module lists what the recogniser should expect (`caller_phrases`) and what the bot may say
(`bot_phrases`), so the stand-in's ASR and the phone simulator's ASR use matching vocabularies.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from callbot.config import DEFAULT_INSTRUCTIONS
from callbot.local.speech.asr import normalize_words
from callbot.local.voicelive.faq_tools import (
    CANNOT_DO,
    TRANSFER_REASON,
    TRANSFERRING,
    Answer,
    ToolCall,
    digits_in,
    is_number,
    parse_answer,
    parse_templates,
    render_outputs,
    substitute,
)

NOT_UNDERSTOOD = "Sorry, I did not catch that. Could you say it again?"
GOODBYE = "Thank you for calling. Goodbye!"
WELCOME = "You are welcome. Is there anything else I can help with?"
HELLO = "Hello there! What can I do for you?"
NO_TRANSFER = "I am the offline demo responder, I cannot transfer calls. I can answer questions though."
OK_YES = "All right."
OK_NO = "Okay, no problem."
YOU_SAID = "You said: {text}."
FIXED_REPLIES = (NOT_UNDERSTOOD, GOODBYE, WELCOME, HELLO, NO_TRANSFER, OK_YES, OK_NO)
UNAVAILABLE: Mapping[str, str] = MappingProxyType({"transfer_to_human": NO_TRANSFER})
"""What is said instead of calling a tool the session does not declare (else `CANNOT_DO`)."""

COMMON_PHRASES = (
    "hello", "hi there", "good morning", "good afternoon", "yes", "no", "yes please", "no thank you",
    "thank you", "thanks", "goodbye", "bye", "that is all", "what are your opening hours", "when are you open",
    "where are you", "can i speak to a human", "can i speak to someone", "can i speak to a person",
    "can you repeat that",
    "i have a question", "i would like to place an order", "how much does it cost", "help",
)  # fmt: skip

_FILLER = frozenset({"a", "an", "the", "to", "of", "is", "are", "do", "does", "i", "you", "your", "me", "my",
                     "please", "can", "could", "would", "um", "uh", "and", "for", "it", "in", "on", "we"})  # fmt: skip
_Q = re.compile(r"^\s*(?:[-*]\s*)?Q\s*[:.)]\s*(.+?)\s*$", re.IGNORECASE)
_A = re.compile(r"^\s*(?:[-*]\s*)?A\s*[:.)]\s*(.+?)\s*$", re.IGNORECASE)
MIN_SCORE = 0.5
SAMPLE_FAQ = """Q: What are your opening hours? | When are you open?
A: We are open from seven in the morning to six in the evening, Monday to Saturday.
Q: Do you deliver? | Can you deliver?
A: Yes, we deliver within five miles of the shop. Delivery is free for orders over twenty dollars, and it takes \
about an hour.
Q: Where are you? | Where is the shop?
A: We are at twelve Main Street, next to the post office.
Q: Do you have gluten free bread?
A: Yes, we bake gluten free bread every Tuesday and Friday.
Q: I want to speak to a person | I want to speak to a human | I would like to talk to someone
A: One moment please, I will put you through to a colleague. TOOL transfer_to_human {"reason": "the caller \
asked for a person"}
"""
"""The FAQ the stand-in answers from when the prompt is the default one (see the module docstring)."""


@dataclass(frozen=True)
class FaqEntry:
    questions: tuple[str, ...]
    answer: str


def parse_faq(instructions: str) -> list[FaqEntry]:
    """The ``Q:`` / ``A:`` pairs of ``instructions`` (an ``A:`` line answers the ``Q:`` line before it)."""
    entries: list[FaqEntry] = []
    question: str | None = None
    for line in instructions.splitlines():
        q, a = _Q.match(line), _A.match(line)
        if q:
            question = q.group(1)
        elif a and question is not None:
            alternatives = tuple(p.strip() for p in question.split("|") if p.strip())
            if alternatives:
                entries.append(FaqEntry(alternatives, a.group(1)))
            question = None
    return entries


def faq_entries(instructions: str) -> list[FaqEntry]:
    """The FAQ the stand-in answers from: the instructions' own, or `SAMPLE_FAQ` for the default prompt."""
    if instructions.strip() == DEFAULT_INSTRUCTIONS:
        return parse_faq(SAMPLE_FAQ)
    return parse_faq(instructions)


def _stem(word: str) -> str:
    for suffix in ("ing", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _keywords(text: str) -> set[str]:
    """The words that pick an FAQ entry: no filler words, no digits or number words (they are arguments, see
    ``{digits}``) unless there is nothing else."""
    words = normalize_words(text)
    kept = {_stem(w) for w in words if w not in _FILLER and not is_number(w)}
    return kept or {_stem(w) for w in words if w not in _FILLER} or {_stem(w) for w in words}


def _score(heard: set[str], question: str) -> float:
    asked = _keywords(question)
    if not heard or not asked:
        return 0.0
    return len(heard & asked) / len(heard | asked)


class Responder:
    """Picks the reply to a recognised caller turn (see the module docstring). Pure and deterministic."""

    def __init__(self, instructions: str) -> None:
        self.instructions = instructions
        self.faq = faq_entries(instructions)
        self.templates = parse_templates(instructions)

    def reply(self, heard: str, tools: Collection[str] = ()) -> str:
        """What is said in answer to ``heard`` (the speech of :meth:`answer`)."""
        return self.answer(heard, tools).speech

    def answer(self, heard: str, tools: Collection[str] = ()) -> Answer:
        """The answer to ``heard`` when the session declares the function tools ``tools``."""
        words = normalize_words(heard)
        if not words:
            return Answer(NOT_UNDERSTOOD)
        keys = _keywords(heard)
        best: tuple[float, FaqEntry] | None = None
        for entry in self.faq:
            score = max(_score(keys, q) for q in entry.questions)
            if score >= MIN_SCORE and (best is None or score > best[0]):
                best = (score, entry)
        if best is not None:
            answer = parse_answer(best[1].answer)
        else:
            answer = _small_talk(set(words)) or Answer(YOU_SAID.format(text=" ".join(words)))
        return _offer(answer, tools, digits_in(heard))

    def tool_reply(self, results: Iterable[tuple[str, str]]) -> str:
        """What is said about function outputs, ``(tool name, output)`` in call order."""
        return render_outputs(results, self.templates)


def _offer(answer: Answer, tools: Collection[str], digits: str) -> Answer:
    """Keep the calls of declared tools (arguments filled in); none left: say that it cannot be done."""
    if not answer.calls:
        return answer
    declared = tuple(ToolCall(c.name, substitute(dict(c.arguments), digits)) for c in answer.calls if c.name in tools)
    if declared:
        return Answer(answer.speech, declared)
    if answer.unavailable is not None:
        return Answer(answer.unavailable)
    names = {c.name for c in answer.calls}
    return Answer(UNAVAILABLE.get(names.pop(), CANNOT_DO) if len(names) == 1 else CANNOT_DO)


def _small_talk(words: set[str]) -> Answer | None:
    if words & {"goodbye", "bye"} or words >= {"that", "all"}:
        return Answer(GOODBYE, (ToolCall("end_call"),), unavailable=GOODBYE)
    if words & {"human", "someone", "agent", "operator", "person"}:
        return Answer(TRANSFERRING, (ToolCall("transfer_to_human", {"reason": TRANSFER_REASON}),))
    reply = _small_talk_sentence(words)
    return Answer(reply) if reply else None


def _small_talk_sentence(words: set[str]) -> str | None:
    if "no" in words and words <= {"no", "nope", "thank", "thanks", "you"}:
        return OK_NO
    if words <= {"yes", "yeah", "please", "sure"}:
        return OK_YES
    if words & {"thank", "thanks"}:
        return WELCOME
    if words & {"hello", "hi", "hey", "morning", "afternoon"}:
        return HELLO
    return None


def caller_phrases(instructions: str, extra: Iterable[str] = ()) -> list[str]:
    """What the stand-in's recogniser expects callers to say: the FAQ questions, common phrases, ``extra``."""
    phrases = [q for entry in faq_entries(instructions) for q in entry.questions]
    return _unique([*phrases, *COMMON_PHRASES, *extra])


def bot_phrases(
    instructions: str, greeting: str = "", extra_caller: Iterable[str] = (), tools: Collection[str] = ()
) -> list[str]:
    """Everything the responder can say (for a recogniser listening to the bot, e.g. the phone simulator).

    ``tools``: the function tools the sessions declare (``transfer_to_human``, ``end_call``, ...). Sentences about
    tools are included only for those and for the tools the FAQ calls or has templates for: every extra sentence
    makes the phrase recogniser less sure of the others."""
    callers = caller_phrases(instructions, extra_caller)
    said = [YOU_SAID.format(text=" ".join(normalize_words(c))) for c in callers]
    parsed = [parse_answer(entry.answer) for entry in faq_entries(instructions)]
    names = {*tools, *(c.name for a in parsed for c in a.calls)}
    tool_sentences = parse_templates(instructions).sentences(names)
    if "transfer_to_human" in names:
        tool_sentences.append(TRANSFERRING)
    if any(a.calls for a in parsed):
        tool_sentences.append(CANNOT_DO)
    answers = [a.speech for a in parsed]
    return _unique([*([greeting] if greeting else []), *answers, *FIXED_REPLIES, *tool_sentences, *said])


def _unique(phrases: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for phrase in phrases:
        if normalize_words(phrase):
            seen.setdefault(phrase, None)
    return list(seen)
