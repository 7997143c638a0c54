"""What the agent heard the caller say: a local-only debug channel for the phone simulator, and the comparison.

``GET /local/heard/{call_id}?token=<the call's callback token>`` with ``Authorization: Bearer <ACS-signed JWT>``
answers ``{"heard": [...]}``: the caller transcripts (``conversation.item.input_audio_transcription.completed``)
callbot has received from Voice Live for that live call, in order. `callbot dial` reads it after each turn.

* The route exists only while callbot runs the built-in offline stand-in (no ``AZURE_VOICELIVE_ENDPOINT``):
  `callbot.app` does not mount it otherwise, so with a real Voice Live endpoint it answers 404.
* It is authorised exactly like an ACS callback of that call: the per-call token of the call's callback URL
  (an HMAC bound to the call id, so one call's token never opens another call's transcript) and an ACS-signed
  JWT. A Twilio call's is authorised like a Twilio request: ``GET /local/heard/{call_id}?CallSid=<the call's sid>``
  signed with ``X-Twilio-Signature`` (the account's auth token, over the public URL); each kind opens only its own
  provider's calls. A refusal is 401, counted (``heard_rejected``) and logged without the token.
* Only live calls are served (404 after the call ends): nothing is kept for it. Transcripts are never logged here.

"Recognised" (`heard_matches`): the said and heard texts as normalised words (lower case, punctuation dropped,
hesitations such as "um" ignored) differ by at most one word in five (word edit distance <= 20% of the words
said), so a turn of up to four words must be heard exactly. "do you deliver" heard as "you human" is not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from callbot.acs.auth import TokenRejected

if TYPE_CHECKING:
    from callbot.local.caller.simulator import TurnResult
    from callbot.services import Services

log = logging.getLogger(__name__)

HEARD_PATH = "/local/heard/{call_id}"
CALLBACK_PATH = "/api/callbacks/"
FETCH_TIMEOUT_S = 5.0
HESITATIONS = frozenset({"um", "uh", "er", "erm", "hmm", "mm"})
MAX_WORD_ERROR_RATE = 0.2


async def heard(request: Request) -> Response:
    svc: Services = request.app.state.services
    call_id = str(request.path_params["call_id"])
    twilio = "x-twilio-signature" in request.headers
    try:
        if twilio:
            _verify_twilio(svc, request)
        else:
            svc.signer.verify(call_id, request.query_params.get("token"), purpose="callback", now=time.time())
            await svc.acs_verifier.verify(request.headers.get("authorization"))
    except TokenRejected as exc:
        svc.metrics.inc("heard_rejected")
        log.warning("local heard channel for %r: rejected (%s)", call_id[:40], exc.reason)
        return JSONResponse({"error": "unauthorized"}, status_code=401)
    call = svc.registry.get(call_id)
    if call is None or call.bridge is None:
        return JSONResponse({"error": "no such live call"}, status_code=404)
    transport = call.bridge.transport
    if twilio != (transport.name == "twilio") or (
            twilio and request.query_params.get("CallSid") != getattr(transport, "call_sid", None)):
        svc.metrics.inc("heard_rejected")
        log.warning("call %s: local heard channel: rejected (credentials of another call or provider)", call_id)
        return JSONResponse({"error": "unauthorized"}, status_code=401)
    texts = [turn.text for turn in call.bridge.core.turns if turn.role == "caller"]
    log.debug("call %s: local heard channel: %d caller transcript(s)", call_id, len(texts))
    return JSONResponse({"heard": texts})


def _verify_twilio(svc: Services, request: Request) -> None:
    """A Twilio call's request: signed like every Twilio request to callbot (`X-Twilio-Signature` over the public
    URL, with the account's auth token), naming the call's CallSid in its query."""
    settings = svc.settings
    if settings.twilio_auth_token is None or not settings.callbot_public_url:
        raise TokenRejected("Twilio is not configured here")
    query = request.url.query
    url = settings.callbot_public_url + request.url.path + (f"?{query}" if query else "")
    validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    if not validator.validate(url, {}, request.headers["x-twilio-signature"]):
        raise TokenRejected("wrong X-Twilio-Signature")


def routes() -> list[Route]:
    """The channel's routes: mount them only when the offline stand-in plays Voice Live."""
    return [Route(HEARD_PATH, heard, methods=["GET"])]


def heard_url(callback_uri: str) -> str:
    """The channel's URL for a call, from the callback URL callbot gave ACS (same base, call id and token)."""
    parts = urlsplit(callback_uri)
    base, found, call_id = parts.path.rpartition(CALLBACK_PATH)
    if not found:
        raise ValueError("not a callbot callback URL")
    return urlunsplit(parts._replace(path=f"{base}{HEARD_PATH.replace('{call_id}', call_id)}"))


async def fetch_heard(http: aiohttp.ClientSession, callback_uri: str, authorization: str) -> list[str] | None:
    """What the agent has heard so far on the call, or None when callbot offers no such channel (a real Voice
    Live endpoint), refuses, or cannot be asked."""
    return await fetch_heard_at(http, heard_url(callback_uri), {"Authorization": authorization})


async def fetch_heard_at(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> list[str] | None:
    """`fetch_heard` for a channel URL and its credentials (a Twilio call's: signed like Twilio signs)."""
    try:
        async with http.get(url, headers=headers,
                            timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)) as response:  # fmt: skip
            if response.status != 200:
                return None
            body = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.info("what the agent heard: not available (%s)", type(exc).__name__)
        return None
    texts = body.get("heard") if isinstance(body, dict) else None
    return [str(t) for t in texts] if isinstance(texts, list) else None


def _words(text: str) -> list[str]:
    from callbot.local.speech.asr import normalize_words  # the 'local' extra; the route above works without it

    return [w for w in normalize_words(text) if w not in HESITATIONS]


def word_errors(said: str, heard_text: str) -> int:
    """Word edit distance (substitutions, insertions, deletions) between the normalised texts."""
    a, b = _words(said), _words(heard_text)
    row = list(range(len(b) + 1))
    for i, word in enumerate(a, start=1):
        previous, row[0] = row[0], i
        for j, other in enumerate(b, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != other))
    return row[-1]


def heard_matches(said: str, heard_text: str) -> bool:
    """Whether the agent heard what was said (see the module docstring)."""
    words = _words(said)
    return word_errors(said, heard_text) <= int(len(words) * MAX_WORD_ERROR_RATE)


AgentHeard = Callable[[], Awaitable["list[str] | None"]]
"""What the agent has heard so far on a call (None: not available)."""


class HeardTracker:
    """Assigns what the agent heard to turns: the transcripts that arrived since the previous turn's."""

    def __init__(self, fetch: AgentHeard | None, add_line: Callable[[float, str, str], None]) -> None:
        self._fetch = fetch
        self._add_line = add_line
        self._seen = 0
        self.available = False

    async def _texts(self) -> list[str] | None:
        texts = await self._fetch() if self._fetch is not None else None
        self.available = self.available or texts is not None
        return texts

    async def start(self) -> None:
        self._seen = len(await self._texts() or [])  # anything before the first turn is not a turn's

    async def collect(self, result: TurnResult) -> None:
        texts = await self._texts()
        if texts is None:
            return
        result.heard = " ".join(t for t in texts[self._seen:] if t.strip())
        self._seen = len(texts)
        verdict = "" if result.recognised is not False else "  << NOT what the caller said"
        self._add_line(result.utterance.speech_end_at, "agent heard", (result.heard or "(nothing)") + verdict)
