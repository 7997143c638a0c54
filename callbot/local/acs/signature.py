"""The HMAC-SHA256 request signature check of the local ACS stand-in, as ACS does it.

``x-ms-date`` (or ``Date``) within 15 minutes of the server clock, ``x-ms-content-sha256`` equal to the body's hash,
and the signature over ``VERB\\npath?query\\n<signed header values>`` with the resource's access key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from aiohttp import web

MAX_CLOCK_SKEW_SECONDS = 15 * 60


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hmac_problem(request: web.Request, raw: bytes, key: bytes) -> str | None:
    """None when the request's HMAC-SHA256 signature is valid, else why not (never a key or expected signature)."""
    scheme, _, params = request.headers.get("Authorization", "").partition(" ")
    if scheme != "HMAC-SHA256":
        return "missing or non HMAC-SHA256 Authorization header"
    fields = dict(part.partition("=")[::2] for part in params.split("&"))
    signed = [name.strip().lower() for name in fields.get("SignedHeaders", "").split(";")]
    date_names = [name for name in signed if name in ("x-ms-date", "date")]
    if not fields.get("Signature") or not date_names or not {"host", "x-ms-content-sha256"} <= set(signed):
        return "SignedHeaders must name x-ms-date (or date), host and x-ms-content-sha256, and a Signature"
    values = [request.headers.get(name) for name in signed]
    if any(value is None for value in values):
        return "a signed header is missing from the request"
    try:
        sent = parsedate_to_datetime(request.headers[date_names[0]])
        skew = abs((datetime.now(UTC) - sent).total_seconds())
    except (TypeError, ValueError):
        return "the request date is not an RFC 1123 date"
    if skew > MAX_CLOCK_SKEW_SECONDS:
        return f"the request date is {skew:.0f} s away from the server clock"
    if request.headers["x-ms-content-sha256"] != _b64(hashlib.sha256(raw).digest()):
        return "x-ms-content-sha256 does not match the request body"
    to_sign = f"{request.method.upper()}\n{request.raw_path}\n{';'.join(v or '' for v in values)}"
    expected = _b64(hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).digest())
    if not hmac.compare_digest(expected.encode(), fields["Signature"].encode()):
        return "the signature does not match"
    return None
