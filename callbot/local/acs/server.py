"""A local stand-in for the ACS Call Automation REST API (aiohttp.web on 127.0.0.1, port 0).

Checks the HMAC-SHA256 signature as ACS does (``x-ms-date``/``Date`` within 15 minutes, ``x-ms-content-sha256``
equal to the body's hash, signature over ``VERB\\npath?query\\n<signed header values>``), else 401
``{"error": {"code": "7509", "message": "HMAC-SHA256 validation failed: ..."}}`` (`callbot.local.acs.signature`). Serves
answer, reject, terminate, DELETE (hang up), transferToParticipant (`callbot.local.acs.request_checks`) and GET call
properties; unknown or ended calls get 404. Records every request; `post_callback` posts ACS-shaped CloudEvents.
A repeated ``Repeatability-Request-ID`` gets the first reply.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from aiohttp import web

from callbot.local.acs.events import callback_event, subscription_validation_event
from callbot.local.acs.request_checks import (
    ACCEPTED_MESSAGE,
    FAILED_RESULT,
    TransferRequest,
    accepted_data,
    check_streaming,
    parse_transfer,
    schemes,
)
from callbot.local.acs.signature import hmac_problem
from callbot.local.caller.messages import PhoneError

__all__ = ["AcsServer", "AnsweredCall", "RecordedRequest", "subscription_validation_event"]

logger = logging.getLogger(__name__)

RequestKind = Literal["answer", "reject", "terminate", "hangup", "get", "transfer"]
_CALL_PATH = re.compile(r"/calling/callConnections/([^/:]+)(:terminate|:transferToParticipant)?")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: Mapping[str, str]
    body: Any  # parsed JSON, or None (empty or not JSON)
    headers: Mapping[str, str]
    kind: RequestKind | None  # None: no such route
    status: int  # the status the stand-in answered
    authorized: bool
    error: str | None  # the error message the stand-in answered with, if any
    at: float  # time.monotonic()


@dataclass(frozen=True)
class AnsweredCall:
    call_connection_id: str
    server_call_id: str
    correlation_id: str
    incoming_call_context: str
    callback_uri: str
    operation_context: str | None
    media_streaming: Mapping[str, Any] | None  # mediaStreamingOptions exactly as received
    transport_url: str | None
    audio_format: str | None
    caller_raw_id: str | None = None  # from the IncomingCall event the stand-in made, when it made it


CallHook = Callable[[AnsweredCall], Coroutine[Any, Any, None]]
_Hook = tuple[CallHook | None, AnsweredCall] | None


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class AcsServer:
    """``access_key``: a connection string's base64 key (str) or the raw key (bytes); None: a random one.
    ``require_tls``: refuse non-https callback and non-wss transport URLs, as ACS does. ``fail_transfers_to``:
    transfer targets (E.164 numbers or raw ids) whose transfers end in CallTransferFailed. ``authorize``: gives the
    Authorization header of the callbacks the stand-in sends itself (transfer outcomes); None: sent without one."""

    def __init__(self, access_key: bytes | str | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 require_tls: bool = False, fail_transfers_to: Collection[str] = ()) -> None:
        if access_key is None:
            access_key = secrets.token_bytes(32)
        self._key = base64.b64decode(access_key, validate=True) if isinstance(access_key, str) else access_key
        self._host, self._port, self._require_tls = host, port, require_tls
        self.requests: list[RecordedRequest] = []
        self.calls: dict[str, AnsweredCall] = {}
        self.states: dict[str, str] = {}  # call connection id -> connecting / connected / disconnected
        self.rejected: list[tuple[str, str | None]] = []  # (incoming call context, reason)
        self.on_answer: CallHook | None = None
        self.on_hangup: CallHook | None = None
        self.on_transferred: Callable[[AnsweredCall, TransferRequest], Coroutine[Any, Any, None]] | None = None
        self.authorize: Callable[[], str] | None = None
        self.fail_transfers_to = set(fail_transfers_to)
        self.transfers: list[TransferRequest] = []  # every transfer request answered 202, in order
        self.hook_errors: list[BaseException] = []
        self._contexts: dict[str, tuple[str, str, str]] = {}  # call context -> (serverCallId, correlationId, caller)
        self._replies: dict[str, tuple[int, Any]] = {}  # Repeatability-Request-ID -> first answer reply
        self._faults: dict[str, list[int]] = {}
        self._queues: dict[str, asyncio.Queue[RecordedRequest]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self._session = self._runner = None

    async def __aenter__(self) -> AcsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def connection_string(self) -> str:
        return f"endpoint={self.url}/;accesskey={_b64(self._key)}"

    def fail_next(self, kind: RequestKind, status: int, *, times: int = 1) -> None:
        """Answer the next ``times`` authorized ``kind`` requests with ``status`` and an ACS-style error."""
        self._faults.setdefault(kind, []).extend([status] * times)

    async def wait_for(self, kind: RequestKind, timeout: float = 5.0) -> RecordedRequest:  # noqa: ASYNC109
        """The next authorized request of ``kind`` not yet returned by `wait_for` (waits for it to arrive)."""
        try:
            async with asyncio.timeout(timeout):
                return await self._queues.setdefault(kind, asyncio.Queue()).get()
        except TimeoutError:
            raise TimeoutError(f"no {kind} request reached the ACS stand-in within {timeout} s") from None

    async def wait_answered(self, context: str, *, within: float) -> AnsweredCall:
        """The call answered for incoming call ``context`` (waiting up to ``within`` s); `PhoneError` when it was
        rejected or not answered in time."""
        deadline = time.monotonic() + within
        while True:
            for call in self.calls.values():
                if call.incoming_call_context == context:
                    return call
            if any(ctx == context for ctx, _ in self.rejected):
                raise PhoneError("callbot rejected the call")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PhoneError(f"callbot did not answer within {within:.0f} s")
            with contextlib.suppress(TimeoutError):
                await self.wait_for("answer", timeout=min(remaining, 0.5))
            await asyncio.sleep(0)

    def incoming_call_event(self, caller: str = "+14255550123", callee: str = "+18005550100", *,
                            display_name: str = "") -> dict[str, Any]:
        """An Event Grid `Microsoft.Communication.IncomingCall` event shaped like Microsoft's documentation;
        its context is registered so that answering it yields its serverCallId / correlationId."""
        claims = _b64(json.dumps({"cc": secrets.token_urlsafe(48), "shr": secrets.token_urlsafe(9)}).encode())
        context = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + claims.rstrip("=") + "."
        server_call_id = _b64(f"https://acs.local/api/v2/cp/conv-{uuid.uuid4().hex}/".encode())
        correlation_id = str(uuid.uuid4())
        self._contexts[context] = (server_call_id, correlation_id, f"4:{caller}")

        def ident(number: str) -> dict[str, Any]:
            return {"kind": "phoneNumber", "rawId": f"4:{number}", "phoneNumber": {"value": number}}

        return {"id": str(uuid.uuid4()), "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/"
                "resourcegroups/rg/providers/microsoft.communication/communicationservices/acs-local",
                "subject": f"/caller/4:{caller}/recipient/4:{callee}",
                "data": {"to": ident(callee), "from": ident(caller), "serverCallId": server_call_id,
                         "callerDisplayName": display_name, "incomingCallContext": context,
                         "correlationId": correlation_id},
                "eventType": "Microsoft.Communication.IncomingCall", "dataVersion": "1.0",
                "metadataVersion": "1", "eventTime": datetime.now(UTC).isoformat()}

    def callback_event(self, event_type: str, call_connection_id: str, data: Mapping[str, Any] | None = None,
                       **result: Any) -> dict[str, Any]:
        """One CloudEvent shaped like ACS's callbacks (``event_type``: ``CallConnected`` or the full type);
        ``result``: result_code, result_sub_code, result_message (see `callbot.local.acs.events.callback_event`)."""
        return callback_event(event_type, call_connection_id, self.calls.get(call_connection_id), data, **result)

    async def post_callback(self, callback_url: str, event_type: str, call_connection_id: str,
                            data: Mapping[str, Any] | None = None, authorization: str | None = None,
                            **result: Any) -> int:
        """POST one ACS-shaped CloudEvent (in an array) to ``callback_url``; returns the HTTP status.
        ``authorization`` is the whole header value (``Bearer <ACS-signed JWT>``); ``result`` goes to
        `callback_event` (result_code, result_sub_code, result_message)."""
        if self._session is None:
            raise RuntimeError("AcsServer is not started")
        event = self.callback_event(event_type, call_connection_id, data, **result)
        name = event["type"].rsplit(".", 1)[-1]
        if name == "CallConnected" and self.states.get(call_connection_id) == "connecting":
            self.states[call_connection_id] = "connected"
        elif name == "CallDisconnected" and call_connection_id in self.states:
            self.states[call_connection_id] = "disconnected"
        headers = {"Content-Type": "application/json", "User-Agent": "acs-stand-in"}
        if authorization:
            headers["Authorization"] = authorization
        body = json.dumps([event])
        for attempt in (1, 2):  # like ACS, deliver again when a pooled connection turns out to be closed
            try:
                async with self._session.post(callback_url, data=body, headers=headers) as response:
                    await response.read()
                    return response.status
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        kind, call_id = _route(request.method, request.path)
        problem = hmac_problem(request, raw, self._key)
        hook: _Hook = None
        if problem is not None:
            status, payload = 401, _error("7509", f"HMAC-SHA256 validation failed: {problem}")
        elif kind is None:
            status, payload = 404, _error("NotFound", "The requested resource was not found.")
        elif "api-version" not in request.query:
            status, payload = 400, _error("MissingApiVersionParameter", "The api-version parameter is required.")
        elif self._faults.get(kind):
            status = self._faults[kind].pop(0)
            payload = _error(str(status), f"Injected failure (HTTP {status}) by the ACS stand-in.")
        elif kind in ("answer", "reject"):
            repeat_id = request.headers.get("Repeatability-Request-ID")
            status, payload, hook = self._incoming(kind, body, repeat_id)
        elif kind == "transfer":
            status, payload, hook = self._transfer(call_id or "", body)
        else:
            status, payload, hook = self._connection(kind, call_id or "")
        authorized = problem is None
        error = payload["error"]["message"] if isinstance(payload, dict) and "error" in payload else None
        record = RecordedRequest(request.method, request.path, dict(request.query), body,
                                 dict(request.headers), kind, status, authorized, error, time.monotonic())
        self.requests.append(record)
        logger.debug("ACS stand-in: %s %s -> %s", request.method, request.path, status)
        if authorized and kind is not None:
            self._queues.setdefault(kind, asyncio.Queue()).put_nowait(record)
        response = web.Response(status=status) if payload is None else web.json_response(payload, status=status)
        if hook is not None and hook[0] is not None:
            await response.prepare(request)
            await response.write_eof()  # the SDK has its reply before the hook (callbacks, media) runs
            task = asyncio.get_running_loop().create_task(hook[0](hook[1]))
            self._tasks.add(task)
            task.add_done_callback(self._hook_done)
        return response

    def _incoming(self, kind: str, body: Any, repeat_id: str | None) -> tuple[int, Any, _Hook]:
        if not isinstance(body, dict) or not isinstance(body.get("incomingCallContext"), str):
            return 400, _error("BadRequest", "incomingCallContext is required."), None
        context: str = body["incomingCallContext"]
        if kind == "reject":
            reason = body.get("callRejectReason")
            self.rejected.append((context, reason if isinstance(reason, str) else None))
            return 204, None, None
        if repeat_id and repeat_id in self._replies:
            return *self._replies[repeat_id], None
        callback = body.get("callbackUri")
        if not isinstance(callback, str) or not callback.startswith(schemes("https", self._require_tls)):
            return 400, _error("BadRequest", "callbackUri must be an absolute https URL."), None
        streaming = body.get("mediaStreamingOptions")
        problem = check_streaming(streaming, self._require_tls) if streaming is not None else None
        if problem:
            return 400, _error("BadRequest", problem), None
        minted = (_b64(uuid.uuid4().bytes), str(uuid.uuid4()), None)
        server_call_id, correlation_id, caller = self._contexts.get(context) or minted
        call = AnsweredCall(
            call_connection_id=str(uuid.uuid4()), server_call_id=server_call_id,
            correlation_id=correlation_id, incoming_call_context=context, callback_uri=callback,
            operation_context=body.get("operationContext"), media_streaming=streaming,
            transport_url=streaming.get("transportUrl") if streaming else None,
            audio_format=streaming.get("audioFormat") if streaming else None, caller_raw_id=caller)
        self.calls[call.call_connection_id] = call
        self.states[call.call_connection_id] = "connecting"
        reply = self._properties(call)
        if repeat_id:
            self._replies[repeat_id] = (200, reply)
        return 200, reply, (self.on_answer, call)

    def _connection(self, kind: str, call_id: str) -> tuple[int, Any, _Hook]:
        call = self.calls.get(call_id)
        if call is None or self.states.get(call_id) == "disconnected":
            return 404, _error("NotFound", "Call not found."), None
        if kind == "get":
            return 200, self._properties(call), None
        self.states[call_id] = "disconnected"
        return 204, None, (self.on_hangup, call)

    def _transfer(self, call_id: str, body: Any) -> tuple[int, Any, _Hook]:
        call = self.calls.get(call_id)
        if call is None or self.states.get(call_id) == "disconnected":
            return 404, _error("NotFound", "Call not found."), None
        request = parse_transfer(call_id, body, call.callback_uri, self.fail_transfers_to)
        if isinstance(request, str):
            return 400, _error("BadRequest", request), None
        self.transfers.append(request)

        async def outcome(answered: AnsweredCall) -> None:
            await self._transfer_outcome(answered, request)

        return 202, {"operationContext": request.operation_context}, (outcome, call)

    async def _transfer_outcome(self, call: AnsweredCall, request: TransferRequest) -> None:
        """As ACS: CallTransferFailed; or CallTransferAccepted, the media stream ends, then CallDisconnected."""
        authorization = self.authorize() if self.authorize is not None else None
        context = {"operationContext": request.operation_context}
        connection_id = call.call_connection_id
        if request.fails:
            await self.post_callback(request.callback_uri, "CallTransferFailed", connection_id, context,
                                     authorization, **FAILED_RESULT)
            return
        self.states[connection_id] = "disconnected"  # the application's leg is gone: hang-ups now get 404
        await self.post_callback(request.callback_uri, "CallTransferAccepted", connection_id,
                                 {**context, **accepted_data(request, call.caller_raw_id)}, authorization,
                                 result_message=ACCEPTED_MESSAGE)
        if self.on_transferred is not None:
            await self.on_transferred(call, request)
        await self.post_callback(call.callback_uri, "CallDisconnected", connection_id, None, authorization)

    def _properties(self, call: AnsweredCall) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "callConnectionId": call.call_connection_id, "serverCallId": call.server_call_id,
            "targets": [], "callConnectionState": self.states.get(call.call_connection_id, "connecting"),
            "callbackUri": call.callback_uri, "correlationId": call.correlation_id,
            "answeredBy": {"id": "8:acs:00000000-0000-0000-0000-000000000000_" + call.correlation_id},
        }
        if call.media_streaming is not None:
            reply["mediaStreamingSubscription"] = {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, call.call_connection_id)),
                "state": "active" if self.states.get(call.call_connection_id) == "connected" else "inactive",
                "subscribedContentTypes": ["audio"]}
        return reply

    def _hook_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self.hook_errors.append(error)
            logger.error("ACS stand-in hook failed", exc_info=error)


def _route(method: str, path: str) -> tuple[RequestKind | None, str | None]:
    if method == "POST" and path == "/calling/callConnections:answer":
        return "answer", None
    if method == "POST" and path == "/calling/callConnections:reject":
        return "reject", None
    match = _CALL_PATH.fullmatch(path)
    kinds: dict[tuple[str, str], RequestKind] = {
        ("POST", ":terminate"): "terminate", ("GET", ""): "get", ("DELETE", ""): "hangup",
        ("POST", ":transferToParticipant"): "transfer"}
    kind = kinds.get((method, match.group(2) or "")) if match else None
    return (kind, match.group(1)) if kind and match else (None, None)
