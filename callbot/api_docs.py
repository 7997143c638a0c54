"""What `/docs` and `/openapi.json` say about the HTTP routes (`callbot.app`), when `CALLBOT_API_DOCS` is on.

The webhook and the callbacks read their query, headers and body raw (so that their replies never change shape), so
FastAPI cannot infer their parameters: they are described here. Nothing here comes from the settings: the schema
holds no configured value, secret or otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from starlette.responses import PlainTextResponse

from callbot import __version__

APP_DOC: Mapping[str, Any] = MappingProxyType({
    "title": "callbot",
    "version": __version__,
    "summary": "An Azure AI Voice Live agent on a phone line through Azure Communication Services.",
    "description": "The HTTP routes. The media stream is the WebSocket `/ws/media/{call_id}` (not listed here: "
                   "OpenAPI describes no WebSockets), opened by ACS with a per-call token and an ACS-signed JWT.",
})


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}}}}


def _json(description: str, example: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"example": example}}}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _events_body(what: str) -> dict[str, Any]:
    return {"required": True, "description": f"{what}, at most 1 MiB (read raw: nothing is parsed before the cap)",
            "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}}


def _query(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": True, "schema": {"type": "string"}, "description": description}


_REFUSALS: Mapping[int | str, dict[str, Any]] = MappingProxyType({
    400: _error("malformed body (the reason, without the body)"),
    401: _error("authentication failed (always the same body)"),
    413: _error("body over 1 MiB"),
})

INCOMING_CALL_DOC: Mapping[str, Any] = MappingProxyType({
    "tags": ["ACS"],
    "summary": "Event Grid: subscription validation and incoming calls",
    "description": "Answers a `Microsoft.EventGrid.SubscriptionValidationEvent` with its validation code; answers "
                   "each `Microsoft.Communication.IncomingCall` in the background (or rejects it through ACS, busy, "
                   "at the call cap); acknowledges other event types. With `CALLBOT_EVENTGRID_AUDIENCE` set, an "
                   "`Authorization: Bearer` Microsoft Entra token is required too.",
    "responses": {200: _json("validation answered, or the events acknowledged", {"accepted": 1}), **_REFUSALS},
    "openapi_extra": {"parameters": [_query("secret", "the webhook secret (`CALLBOT_WEBHOOK_SECRET`)")],
                      "requestBody": _events_body("a JSON array of Event Grid events")},
})

CALLBACK_DOC: Mapping[str, Any] = MappingProxyType({
    "tags": ["ACS"],
    "summary": "ACS: mid-call events",
    "description": "Call Automation CloudEvents of one call (`CallConnected`, `CallDisconnected`, "
                   "`MediaStreaming*`, ...). Requires the per-call URL token and an ACS-signed `Authorization: "
                   "Bearer` JWT. Events of a call that is not live here are acknowledged.",
    "responses": {200: _json("events handled", {"ok": True}), **_REFUSALS},
    "openapi_extra": {
        "parameters": [
            {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "callbot's id for the call"},
            _query("token", "the per-call callback token, from the callback URL callbot gave ACS"),
        ],
        "requestBody": _events_body("a JSON array of CloudEvents"),
    },
})

HEALTHZ_DOC: Mapping[str, Any] = MappingProxyType({
    "tags": ["platform"], "summary": "Liveness", "responses": {200: _text("`ok`")},
    "response_class": PlainTextResponse,
})

READYZ_DOC: Mapping[str, Any] = MappingProxyType({
    "tags": ["platform"],
    "summary": "Readiness",
    "responses": {
        200: _json("ready", {"ready": True, "calls": 0}),
        503: _json("draining or misconfigured", {"ready": False, "problems": ["CALLBOT_PUBLIC_URL not set"]}),
    },
})

METRICS_DOC: Mapping[str, Any] = MappingProxyType({
    "tags": ["platform"], "summary": "Prometheus metrics", "responses": {200: _text("Prometheus text format 0.0.4")},
    "response_class": PlainTextResponse,
})
