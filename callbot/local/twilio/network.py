"""Twilio for a callbot under test or demo: start it, give callbot `env()`, then `place_call`.

A call comes in as Twilio delivers one: the voice webhook (``POST {callbot}/api/twilio/voice``, form-encoded, the
parameters Twilio sends, ``X-Twilio-Signature`` computed with the twilio package's ``RequestValidator`` over the URL
and the form), then the TwiML answer is followed: ``<Reject>`` refuses the call (`TwilioRefused`, the reason kept
in ``rejected``), ``<Connect><Stream>`` opens the Media Stream (the WebSocket handshake signed too, as Twilio
signs it) and sends ``connected`` and ``start`` with the ``<Parameter>``s as ``customParameters``. callbot's REST
updates end a stream: ``Status=completed`` (the call is over: ``stop``, then the socket closes) or ``<Dial>`` TwiML
(``stop``, and the call is "transferred to" the number).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import aiohttp
from twilio.request_validator import RequestValidator

from callbot.local.caller.heard import HEARD_PATH, fetch_heard_at
from callbot.local.caller.messages import CALLBOT_HUNG_UP, PhoneError
from callbot.local.twilio.call import TwilioCall
from callbot.local.twilio.messages import StreamMessages, sid, voice_webhook_form
from callbot.local.twilio.rest import TwilioRest
from callbot.local.twilio.twiml import TwimlAction, TwimlError, parse_twiml

if TYPE_CHECKING:
    from callbot.config import Settings
    from callbot.local.profile import LocalProfile

log = logging.getLogger(__name__)

VOICE_PATH = "/api/twilio/voice"
LOCAL_NUMBER = "+14255550199"  # the Twilio number the simulated caller dials
LOCAL_CALLER = "+14255550123"


class TwilioRefused(PhoneError):
    """callbot answered the voice webhook with ``<Reject>``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"callbot rejected the call ({reason})")
        self.reason = reason


class TwilioNetwork:
    def __init__(self, account_sid: str | None = None, auth_token: str | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, number: str = LOCAL_NUMBER) -> None:  # fmt: skip
        self.account_sid = account_sid or sid("AC")
        self.auth_token = auth_token or sid("")
        self.number = number
        self.rest = TwilioRest(self.account_sid, self.auth_token, host=host, port=port)
        self.rest.on_update = self._updated
        self.validator = RequestValidator(self.auth_token)
        self.http: aiohttp.ClientSession | None = None
        self.calls: list[TwilioCall] = []
        self.rejected: list[tuple[str, str]] = []  # (call sid, reason)
        self.webhooks: list[tuple[str, dict[str, str], str]] = []  # (url, form, signature) as posted

    @classmethod
    def from_profile(cls, profile: LocalProfile, settings: Settings | None = None) -> TwilioNetwork:
        """Twilio as `callbot serve` in local development mode expects it: the profile's credentials and port, or
        the TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN of ``settings`` when both are set (callbot must use the same)."""
        account, token = profile.twilio_account_sid, profile.twilio_auth_token
        if settings is not None and settings.twilio_account_sid and settings.twilio_auth_token is not None:
            account, token = settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value()
        return cls(account, token, host=profile.host, port=profile.twilio_port)

    async def start(self) -> None:
        try:
            await self.rest.start()
        except OSError as exc:
            raise PhoneError(f"cannot listen on {self.rest.url}: {exc.strerror or exc} "
                             "(is another 'callbot dial --twilio' running?)") from None  # fmt: skip
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))

    async def stop(self) -> None:
        for call in self.calls:
            await call.close()
        if self.http is not None:
            await self.http.close()
        await self.rest.stop()

    async def __aenter__(self) -> TwilioNetwork:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def env(self) -> dict[str, str]:
        """The settings callbot needs to trust this Twilio and to reach its REST API."""
        return {"TWILIO_ACCOUNT_SID": self.account_sid, "TWILIO_AUTH_TOKEN": self.auth_token,
                "TWILIO_API_BASE_URL": self.rest.url}

    def sign(self, url: str, params: dict[str, str]) -> str:
        return str(self.validator.compute_signature(url, params))

    async def _updated(self, call_sid: str, action: TwimlAction) -> None:
        """callbot updated a call through the REST API: the stream ends, the call hangs up or goes elsewhere."""
        for call in self.calls:
            if call.call_sid != call_sid:
                continue
            if action.verb == "dial" and action.target:
                call.transferred_to = action.target
                await call.stop_stream(f"transferred to {action.target}")
            else:
                await call.stop_stream(CALLBOT_HUNG_UP)

    async def post_voice_webhook(self, url: str, form: dict[str, str], *,
                                 signed_url: str | None = None) -> tuple[int, str]:  # fmt: skip
        """Post the voice webhook; ``signed_url``: the URL to sign if not ``url`` (the public one behind a proxy)."""
        assert self.http is not None
        signature = self.sign(signed_url or url, form)
        self.webhooks.append((signed_url or url, dict(form), signature))
        async with self.http.post(url, data=form, headers={"X-Twilio-Signature": signature}) as response:
            return response.status, await response.text()

    async def place_call(self, callbot_url: str, *, caller: str = LOCAL_CALLER,
                         public_url: str | None = None) -> TwilioCall:  # fmt: skip
        """Ring callbot: the voice webhook, then its TwiML: a Media Stream opened, or `TwilioRefused`.
        ``public_url``: callbot's public base URL Twilio would call (signed), default ``callbot_url``."""
        assert self.http is not None
        call_sid = sid("CA")
        self.rest.add_call(call_sid, caller, self.number)
        form = voice_webhook_form(call_sid, self.account_sid, caller, self.number)
        placed = time.monotonic()
        base = callbot_url.rstrip("/")
        status, body = await self.post_voice_webhook(base + VOICE_PATH, form, signed_url=(
            public_url.rstrip("/") + VOICE_PATH if public_url else None))  # fmt: skip
        if status != 200:
            self.rest.set_status(call_sid, "failed")
            raise PhoneError(f"callbot answered the Twilio voice webhook with HTTP {status}")
        answered = time.monotonic()
        try:
            action = parse_twiml(body)
        except TwimlError as exc:
            self.rest.set_status(call_sid, "failed")
            raise PhoneError(f"callbot's TwiML cannot be followed: {exc}") from None
        if action.verb == "reject":
            reason = action.reason or "rejected"
            self.rejected.append((call_sid, reason))
            self.rest.set_status(call_sid, "busy" if reason == "busy" else "no-answer")
            raise TwilioRefused(reason)
        if action.verb != "stream" or action.url is None:
            self.rest.completed(call_sid)
            raise PhoneError(f"callbot's TwiML did not connect a stream ({action.verb}"
                             f"{' ' + action.target if action.target else ''})")  # fmt: skip
        if action.dropped_query:
            log.warning("call %s: the <Stream> URL has a query string; Twilio drops it, so does the stand-in",
                        call_sid)
        try:
            ws = await self.http.ws_connect(action.url, headers={"X-Twilio-Signature": self.sign(action.url, {})})
        except aiohttp.WSServerHandshakeError as exc:
            self.rest.completed(call_sid)
            raise PhoneError(f"callbot refused the stream socket (HTTP {exc.status})") from None
        self.rest.set_status(call_sid, "in-progress")
        call = TwilioCall(self, call_sid, ws, StreamMessages(self.account_sid, call_sid, sid("MZ")),
                          action.parameters, placed, answered, time.monotonic())  # fmt: skip
        call_id = action.url.rstrip("/").rsplit("/", 1)[-1]
        heard = HEARD_PATH.replace("{call_id}", call_id) + "?" + urlencode({"CallSid": call_sid})
        call.heard_urls = (base + heard, (public_url.rstrip("/") if public_url else base) + heard)
        self.calls.append(call)
        await call.open()
        return call

    async def fetch_heard(self, call: TwilioCall) -> list[str] | None:
        """What callbot's Voice Live has heard on the call (the offline stand-in's local-only channel), asked as
        Twilio would ask: signed with the auth token. None when callbot does not offer it."""
        if self.http is None or call.heard_urls is None:
            return None
        url, signed = call.heard_urls
        return await fetch_heard_at(self.http, url, {"X-Twilio-Signature": self.sign(signed, {})})

    async def wait_ended(self, call: TwilioCall, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            await call.ended.wait()
