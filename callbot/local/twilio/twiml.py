"""TwiML as the Twilio stand-in follows it: the verbs of a ``<Response>`` that decide what happens to the call.

Understood: ``<Reject reason="busy|rejected"/>`` (the call is refused; default reason "rejected"),
``<Connect><Stream url="wss://..."><Parameter name=".." value=".."/></Stream></Connect>`` (a bidirectional Media
Stream; Twilio drops the query string of a Stream URL, so does the stand-in), ``<Dial>+1...</Dial>`` or
``<Dial><Number>+1...</Number></Dial>`` (the call goes to that number), ``<Hangup/>``. ``<Say>``, ``<Play>`` and
``<Pause>`` before them are skipped (nothing is spoken); a document with none of these ends the call, as Twilio
hangs up when the TwiML runs out. Anything that is not a ``<Response>`` document is a `TwimlError`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

Verb = Literal["reject", "stream", "dial", "hangup"]
SKIPPED = frozenset({"Say", "Play", "Pause"})
REJECT_REASONS = frozenset({"busy", "rejected"})


class TwimlError(ValueError):
    """Not TwiML the stand-in can follow (Twilio would play its "application error" message and hang up)."""


@dataclass(frozen=True)
class TwimlAction:
    verb: Verb
    reason: str | None = None  # reject
    url: str | None = None  # stream: without its query string
    parameters: dict[str, str] = field(default_factory=dict)  # stream: the <Parameter> nouns
    dropped_query: str = ""  # stream: the query string Twilio would drop (the stand-in drops it too)
    target: str | None = None  # dial


def parse_twiml(text: str | bytes) -> TwimlAction:
    """What the call does next according to a TwiML document (see the module docstring)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise TwimlError(f"not XML: {exc}") from None
    if root.tag != "Response":
        raise TwimlError(f"the root element is <{root.tag}>, not <Response>")
    for verb in root:
        if verb.tag in SKIPPED:
            continue
        if verb.tag == "Reject":
            reason = verb.get("reason", "rejected")
            if reason not in REJECT_REASONS:
                raise TwimlError(f"<Reject reason={reason!r}>: Twilio knows only busy and rejected")
            return TwimlAction("reject", reason=reason)
        if verb.tag == "Hangup":
            return TwimlAction("hangup")
        if verb.tag == "Dial":
            number = verb.find("Number")
            target = (number.text if number is not None else verb.text) or ""
            if not target.strip():
                raise TwimlError("<Dial> without a number")
            return TwimlAction("dial", target=target.strip())
        if verb.tag == "Connect":
            return _stream(verb)
        raise TwimlError(f"<{verb.tag}> is not followed by the stand-in")
    return TwimlAction("hangup")


def _stream(connect: ET.Element) -> TwimlAction:
    stream = connect.find("Stream")
    if stream is None:
        raise TwimlError("<Connect> without a <Stream>")
    url = stream.get("url") or ""
    parts = urlsplit(url)
    if parts.scheme not in ("wss", "ws") or not parts.hostname:
        raise TwimlError(f"<Stream url> must be a wss:// URL, got {parts.scheme or 'none'}://")
    parameters: dict[str, str] = {}
    for parameter in stream.findall("Parameter"):
        name = parameter.get("name")
        if not name:
            raise TwimlError("<Parameter> without a name")
        parameters[name] = parameter.get("value", "")
    bare = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return TwimlAction("stream", url=bare, parameters=parameters, dropped_query=parts.query)
