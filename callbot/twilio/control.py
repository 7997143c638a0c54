"""Twilio call control over its REST API: hang up a call, and transfer it (new TwiML with `<Dial>`).

Through the `twilio` package's `Client` with its aiohttp-based `AsyncTwilioHttpClient` (one per app instance, closed
on shutdown). `TWILIO_API_BASE_URL` replaces the API domain's base URL (`https://api.twilio.com`), so a local
stand-in or a test server can play Twilio; `TWILIO_EDGE` / `TWILIO_REGION` keep working as the package reads them.

- hang-up: `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with `Status=completed`;
- status (`GET` the call): whether a call whose stream never reached this replica is live elsewhere;
- transfer: the same update with `Twiml=<Response><Dial><Number>+1...</Number></Dial></Response>`: Twilio ends the
  media stream (`<Connect>` is left) and dials the number, bridging the caller to whoever answers. Twilio has no
  "transfer accepted" callback like ACS: a successful update is the outcome.

Errors are `TwilioControlError` with a short reason (the HTTP status and Twilio's error code; never the auth token,
never the target number).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.rest.api.v2010.account.call import CallContext, CallInstance
from twilio.twiml.voice_response import Dial, VoiceResponse

if TYPE_CHECKING:
    from callbot.config import Settings

log = logging.getLogger(__name__)
# the package logs every request and response at INFO: quieter here (its errors still surface as exceptions)
_http_log = logging.getLogger(__name__ + ".http")
_http_log.setLevel(logging.WARNING)

REQUEST_TIMEOUT_S = 10.0


class TwilioControlError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def dial_twiml(number: str) -> str:
    """The TwiML that hands the call to `number` (E.164)."""
    response = VoiceResponse()
    dial = Dial()
    dial.number(number)
    response.append(dial)
    return str(response)


class TwilioControl:
    def __init__(self, account_sid: str, auth_token: str, base_url: str) -> None:
        self.http = AsyncTwilioHttpClient(logger=_http_log)
        self.client = Client(account_sid, auth_token, http_client=self.http)
        self.client.api.base_url = base_url.rstrip("/")  # the domain builds every URL from it at request time
        self.account_sid = account_sid

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioControl | None:
        if settings.twilio_account_sid is None or settings.twilio_auth_token is None:
            return None
        return cls(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value(),
                   settings.twilio_api_base_url)

    def __repr__(self) -> str:
        return f"TwilioControl(account={self.account_sid[:6]}..., token=<hidden>)"

    async def hang_up(self, call_sid: str) -> None:
        await self._update(call_sid, "hang-up", status="completed")

    async def transfer(self, call_sid: str, number: str) -> None:
        await self._update(call_sid, "transfer", twiml=dial_twiml(number))

    async def status(self, call_sid: str) -> str:
        """The call's status at Twilio (`GET .../Calls/{CallSid}.json`): queued, ringing, in-progress, completed..."""
        call = await self._request(call_sid, "status", lambda c: c.fetch_async())
        return str(call.status or "")

    async def _update(self, call_sid: str, what: str, **fields: str) -> None:
        await self._request(call_sid, what, lambda c: c.update_async(**fields))

    async def _request(self, call_sid: str, what: str, send: Callable[[CallContext], Awaitable[CallInstance]]
                       ) -> CallInstance:  # fmt: skip
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                return await send(self.client.calls(call_sid))
        except TwilioRestException as exc:
            code = f", Twilio error {exc.code}" if exc.code else ""
            raise TwilioControlError(f"{what} refused (HTTP {exc.status}{code})", exc.status) from None
        except TimeoutError:
            raise TwilioControlError(f"{what}: no answer from Twilio within {REQUEST_TIMEOUT_S:.0f} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TwilioControlError(f"{what}: Twilio unreachable ({type(exc).__name__})") from None
        except TwilioException as exc:  # e.g. an answer that is not JSON
            raise TwilioControlError(f"{what}: unexpected answer from Twilio ({type(exc).__name__})") from None

    async def close(self) -> None:
        await self.http.close()
