"""Request checks besides ACS's JWT: per-call URL tokens, the webhook secret, Event Grid's Entra token.

Per-call URL tokens
    The callback URL and the media transport URL handed to ACS carry a token bound to the call id, a purpose
    ("callback", "media"; "web" for the web phone, "twilio" for a Twilio media stream) and an expiry:
    `<base64url(expiry, 8 bytes)>.<base64url(HMAC-SHA256)>`. A callback token cannot open the media socket,
    and a token for one call is worthless for another. All replicas must share `CALLBOT_SIGNING_KEY`.

Webhook secret
    `check_webhook_secret` compares the `secret` query parameter of `/api/incoming-call` in constant time.

Event Grid with Microsoft Entra
    When `CALLBOT_EVENTGRID_AUDIENCE` is set, `EventGridAuth` validates the Bearer token Event Grid sends,
    reusing `callbot.acs.auth.JwtVerifier`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import math
import re
import secrets
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from pydantic import SecretStr

from callbot.acs.auth import Claims, JwtVerifier, TokenRejected

if TYPE_CHECKING:
    from callbot.config import Settings

logger = logging.getLogger(__name__)

__all__ = [
    "ENTRA_JWKS_URL",
    "EVENTGRID_APP_ID",
    "CallTokenSigner",
    "EventGridAuth",
    "Purpose",
    "TokenRejected",
    "check_webhook_secret",
    "entra_issuers",
]

Purpose = Literal["callback", "media", "web", "twilio"]
PURPOSES: frozenset[str] = frozenset({"callback", "media", "web", "twilio"})

_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_DOMAIN = b"callbot-url-token/v1"
_EXPIRY_BYTES = 8
_MAC_BYTES = 32
_MAX_TOKEN_CHARS = 128


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode_strict(text: str) -> bytes:
    """Decode unpadded base64url, accepting only the canonical encoding (one string per byte string)."""
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None
    if _b64encode(raw) != text:
        raise ValueError("not canonical")
    return raw


class CallTokenSigner:
    """Issues and checks the per-call tokens carried in callback and media URLs."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the signing key must be at least 16 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "CallTokenSigner(key=<hidden>)"

    @classmethod
    def from_settings(cls, settings: Settings) -> CallTokenSigner:
        """From `CALLBOT_SIGNING_KEY` (any string; 32 bytes are derived with SHA-256), or a random key."""
        secret = settings.callbot_signing_key
        if secret is not None and secret.get_secret_value():
            return cls(hashlib.sha256(secret.get_secret_value().encode("utf-8")).digest())
        logger.warning(
            "CALLBOT_SIGNING_KEY is not set: using a random per-process key for call URL tokens; "
            "deployments with more than one replica must set CALLBOT_SIGNING_KEY"
        )
        return cls(secrets.token_bytes(32))

    def _mac(self, call_id: str, purpose: str, expiry: bytes) -> bytes:
        if purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {sorted(PURPOSES)}")
        cid = call_id.encode("utf-8", "surrogatepass")
        message = b"".join((
            _DOMAIN, b"\x00", purpose.encode("ascii"), b"\x00",
            struct.pack(">I", len(cid)), cid, expiry,
        ))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def issue(self, call_id: str, *, purpose: Purpose, expires_at: float) -> str:
        """A URL-safe token for `call_id` and `purpose`, valid until `expires_at` (epoch s, rounded up)."""
        if not math.isfinite(expires_at) or not 0 <= expires_at < 2**63:
            raise ValueError("expires_at must be a finite, non-negative epoch time")
        expiry = struct.pack(">Q", math.ceil(expires_at))
        return f"{_b64encode(expiry)}.{_b64encode(self._mac(call_id, purpose, expiry))}"

    def verify(self, call_id: str, token: str | None, *, purpose: Purpose, now: float) -> None:
        """Return if `token` is valid for `call_id` and `purpose` at `now`; else raise `TokenRejected`.

        A token for another call, another purpose or made with another key, and a tampered token, all fail
        the HMAC check: reason "bad signature". Other reasons: "missing token", "malformed token",
        "token expired". Reasons never include the token.
        """
        if purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {sorted(PURPOSES)}")
        if token is None or token == "":
            raise TokenRejected("missing token")
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS or token.count(".") != 1:
            raise TokenRejected("malformed token")
        expiry_text, mac_text = token.split(".")
        try:
            expiry = _b64decode_strict(expiry_text)
            mac = _b64decode_strict(mac_text)
        except ValueError:
            raise TokenRejected("malformed token") from None
        if len(expiry) != _EXPIRY_BYTES or len(mac) != _MAC_BYTES:
            raise TokenRejected("malformed token")
        if not hmac.compare_digest(mac, self._mac(call_id, purpose, expiry)):
            raise TokenRejected("bad signature")
        if now >= struct.unpack(">Q", expiry)[0]:
            raise TokenRejected("token expired")


def check_webhook_secret(expected: SecretStr | None, provided: str | None) -> bool:
    """True when `provided` equals the configured secret, compared in constant time.

    Returns False when no secret is configured (`expected` None or empty): this check never passes by
    default, so the caller must look at `expected is None` itself and decide whether an unprotected webhook
    is acceptable (e.g. accept, with a warning logged once at start-up).
    """
    if expected is None or provided is None:
        return False
    secret = expected.get_secret_value()
    if not secret:
        return False
    # Hash both sides so that the comparison time reveals nothing, not even the secret's length.
    want = hashlib.sha256(secret.encode("utf-8")).digest()
    got = hashlib.sha256(provided.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(want, got)


# Event Grid delivery with Microsoft Entra ------------------------------------------------------------------

ENTRA_JWKS_URL = "https://login.microsoftonline.com/common/discovery/v2.0/keys"
EVENTGRID_APP_ID = "4962773b-9cdb-44cf-a8bf-237846a00ab7"
"""The application id of the Microsoft.EventGrid first-party service principal (it calls the webhook)."""


def entra_issuers(tenant_id: str) -> frozenset[str]:
    """The v1 and v2 token issuers of a Microsoft Entra tenant."""
    return frozenset({f"https://sts.windows.net/{tenant_id}/", f"https://login.microsoftonline.com/{tenant_id}/v2.0"})


def _issuer_matches_own_tenant(claims: Mapping[str, Any]) -> bool:
    tid = claims.get("tid")
    return isinstance(tid, str) and bool(tid) and claims.get("iss") in entra_issuers(tid)


class EventGridAuth:
    """Validates the Microsoft Entra bearer token on Event Grid webhook deliveries.

    `audience`: the Entra application (id or App ID URI) the event subscription delivers to
    (`CALLBOT_EVENTGRID_AUDIENCE`). `tenant_id`: the tenant that issues the tokens; when None, any Entra
    tenant is accepted as long as the issuer is consistent with the token's own `tid` (weaker: set it).
    `app_id`: the caller application that must appear in `appid` (v1) or `azp` (v2): Event Grid's by
    default; None skips that check. `required_role`: an app role the token must carry (e.g.
    "AzureEventGridSecureWebhookSubscriber"), or None.
    """

    def __init__(
        self,
        audience: str,
        *,
        tenant_id: str | None = None,
        jwks_url: str = ENTRA_JWKS_URL,
        app_id: str | None = EVENTGRID_APP_ID,
        required_role: str | None = None,
        leeway_s: float = 60.0,
        refresh_interval_s: float = 300.0,
        http: aiohttp.ClientSession | None = None,
        **kwargs: Any,
    ) -> None:
        issuers = entra_issuers(tenant_id) if tenant_id else _issuer_matches_own_tenant
        self.verifier = JwtVerifier(jwks_url, issuers, audience, leeway_s=leeway_s,
                                    refresh_interval_s=refresh_interval_s, http=http, **kwargs)
        self.app_id = app_id
        self.required_role = required_role

    @classmethod
    def from_settings(cls, settings: Settings, *, http: aiohttp.ClientSession | None = None,
                      **kwargs: Any) -> EventGridAuth | None:
        """None when `CALLBOT_EVENTGRID_AUDIENCE` is unset (no Entra check). Reads an optional
        `callbot_eventgrid_tenant_id` setting when the settings object has one."""
        if not settings.callbot_eventgrid_audience:
            return None
        tenant_id = getattr(settings, "callbot_eventgrid_tenant_id", None)
        return cls(settings.callbot_eventgrid_audience, tenant_id=tenant_id, http=http, **kwargs)

    async def verify(self, authorization_header: str | None, *, now: float | None = None) -> Claims:
        """The token's claims, or `TokenRejected` with a short, token-free reason."""
        claims = await self.verifier.verify(authorization_header, now=now)
        if self.app_id is not None:
            caller = claims.get("appid", claims.get("azp"))
            if not isinstance(caller, str) or caller.casefold() != self.app_id.casefold():
                raise TokenRejected("wrong caller application")
        if self.required_role is not None:
            roles = claims.get("roles")
            if not isinstance(roles, list) or self.required_role not in roles:
                raise TokenRejected("missing role")
        return claims

    async def close(self) -> None:
        await self.verifier.close()
