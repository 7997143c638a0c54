"""The part of Twilio's REST API that callbot calls: fetching and updating a call.

``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` (form-encoded) with ``Status=completed`` hangs the
call up, with ``Twiml=<Response>...</Response>`` redirects it (a ``<Dial>`` transfers it, a ``<Hangup/>`` or a
document with nothing to do ends it); ``GET`` on the same path fetches it. Both answer the call resource as JSON.
Requests are checked like Twilio does: HTTP basic auth with the account sid and auth token (else 401, code 20003),
the account in the path must be that account and the call must exist (else 404, code 20404), a redirect needs a
call in progress (else 400, code 21220), ``Status`` is ``completed`` or ``canceled`` and ``Twiml`` is TwiML (else
400, code 21218 / 12100). Every request is recorded (without its credentials) in ``requests``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from callbot.local.twilio.messages import API_VERSION, rest_error
from callbot.local.twilio.twiml import TwimlAction, TwimlError, parse_twiml

log = logging.getLogger(__name__)

CALL_PATH = f"/{API_VERSION}/Accounts/{{account}}/Calls/{{call}}.json"
ENDED = frozenset({"completed", "busy", "no-answer", "canceled", "failed"})
Update = Callable[[str, TwimlAction], Awaitable[None]]


@dataclass
class CallRecord:
    sid: str
    caller: str
    called: str
    status: str = "ringing"  # ringing -> in-progress -> completed (or busy / no-answer when rejected)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class RestRequest:
    method: str
    path: str
    form: dict[str, str]
    status: int
    authorized: bool


class TwilioRest:
    """``on_update(call_sid, action)`` runs for an accepted update (``hangup`` for ``Status=completed``)."""

    def __init__(self, account_sid: str, auth_token: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.account_sid, self._token = account_sid, auth_token
        self._host, self._port = host, port
        self.calls: dict[str, CallRecord] = {}
        self.requests: list[RestRequest] = []
        self.on_update: Update | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=256 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def add_call(self, sid: str, caller: str, called: str) -> CallRecord:
        record = self.calls[sid] = CallRecord(sid, caller, called)
        return record

    def set_status(self, sid: str, status: str) -> None:
        record = self.calls.get(sid)
        if record is not None and record.status not in ENDED:
            record.status, record.updated = status, datetime.now(UTC)

    def completed(self, sid: str) -> None:
        self.set_status(sid, "completed")

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user.encode(), self.account_sid.encode()) and hmac.compare_digest(
            password.encode(), self._token.encode())

    async def _handle(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        authorized = self._authorized(request)
        status, body = await self._answer(request, form, authorized)
        self.requests.append(RestRequest(request.method, request.path, form, status, authorized))
        if status >= 400:
            log.info("Twilio stand-in: %s %s -> %d (%s)", request.method, request.path, status, body.get("code"))
        return web.json_response(body, status=status)

    async def _answer(self, request: web.Request, form: dict[str, str],
                      authorized: bool) -> tuple[int, dict[str, Any]]:  # fmt: skip
        if not authorized:
            return 401, rest_error(401, 20003, "Authenticate")
        record = self._record(request.path)
        if record is None or request.method not in ("GET", "POST"):
            return 404, rest_error(404, 20404, f"The requested resource {request.path} was not found")
        if request.method == "GET":
            return 200, self.resource(record)
        action: TwimlAction | None = None
        if "Twiml" in form:
            try:
                action = parse_twiml(form["Twiml"])
            except TwimlError as exc:
                return 400, rest_error(400, 12100, f"Document parse failure: {exc}")
            if record.status in ENDED:
                return 400, rest_error(400, 21220, "Call is not in-progress. Cannot redirect.")
        elif "Status" in form:
            if form["Status"] not in ("completed", "canceled"):
                return 400, rest_error(400, 21218, f"Invalid value for Status: {form['Status']!r}")
            if form["Status"] == "canceled" or record.status in ENDED:
                return 200, self.resource(record)  # canceled only ends calls not yet answered; ended stays ended
            action = TwimlAction("hangup")
        else:
            return 400, rest_error(400, 20001, "Nothing to update: give Status, Twiml or Url")
        if action.verb == "stream":
            return 400, rest_error(400, 21220, "The stand-in does not redirect a call to another stream")
        if self.on_update is not None:
            await self.on_update(record.sid, action)
        self.set_status(record.sid, "completed")
        return 200, self.resource(record)

    def _record(self, path: str) -> CallRecord | None:
        prefix = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/"
        if not path.startswith(prefix) or not path.endswith(".json"):
            return None
        return self.calls.get(path[len(prefix) : -len(".json")])

    def resource(self, record: CallRecord) -> dict[str, Any]:
        """The call resource, as Twilio answers it (the fields callbot or the twilio package read)."""
        uri = CALL_PATH.format(account=self.account_sid, call=record.sid)
        return {
            "sid": record.sid, "account_sid": self.account_sid, "api_version": API_VERSION,
            "from": record.caller, "from_formatted": record.caller, "to": record.called,
            "to_formatted": record.called, "status": record.status, "direction": "inbound",
            "date_created": format_datetime(record.created), "date_updated": format_datetime(record.updated),
            "start_time": format_datetime(record.created), "end_time": None, "duration": None, "price": None,
            "price_unit": "USD", "parent_call_sid": None, "phone_number_sid": None, "answered_by": None,
            "forwarded_from": None, "caller_name": None, "group_sid": None, "queue_time": "0", "trunk_sid": None,
            "annotation": None, "uri": uri, "subresource_uris": {},
        }
