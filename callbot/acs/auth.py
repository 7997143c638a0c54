"""Verification of RS256 bearer tokens signed by a key published in a JWKS document.

`JwtVerifier` is the shared machinery (parametrised by issuer set, audience and JWKS URL); `AcsTokenVerifier`
checks the tokens ACS puts on callbacks and on the media WebSocket handshake, and
`callbot.security.EventGridAuth` checks Microsoft Entra tokens on Event Grid deliveries.

Every failure raises `TokenRejected` whose `reason` is a short fixed phrase, safe to log: it never contains
the token or anything read from it.

Keys are cached by `kid`. An unknown `kid` triggers at most one JWKS fetch per `refresh_interval_s` (so a
flood of forged kids cannot turn into a flood of fetches); a failed fetch is retried no sooner than
`failure_backoff_s`. Concurrent verifications that need a fetch share one (under a lock). Cached keys older
than `max_key_age_s` are refreshed on use so that keys withdrawn from the JWKS stop being trusted; if that
refresh fails the cached keys are kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Self

import aiohttp
import jwt

if TYPE_CHECKING:
    from callbot.config import Settings

logger = logging.getLogger(__name__)

ALGORITHM = "RS256"
MAX_TOKEN_CHARS = 16 * 1024
MAX_JWKS_BYTES = 1024 * 1024

IssuerPolicy = Iterable[str] | Callable[[Mapping[str, Any]], bool]
"""Either the accepted `iss` values, or a predicate over the (signature-checked) claims."""


class TokenRejected(Exception):
    """A token failed verification. `reason` is a short fixed phrase, safe to log and to return."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Claims(Mapping[str, Any]):
    """The verified claims of a token: a read-only mapping with a few convenience properties."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:  # claim names only: values may identify people or calls
        return f"Claims(keys={sorted(self._data)})"

    @property
    def issuer(self) -> str:
        return str(self._data.get("iss", ""))

    @property
    def subject(self) -> str | None:
        sub = self._data.get("sub")
        return sub if isinstance(sub, str) else None

    @property
    def expires_at(self) -> float:
        return float(self._data["exp"])


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def parse_bearer(authorization_header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or `TokenRejected`."""
    if authorization_header is None or not authorization_header.strip():
        raise TokenRejected("missing authorization header")
    parts = authorization_header.strip().split()
    if parts[0].lower() != "bearer":
        raise TokenRejected("not a bearer token")
    if len(parts) != 2:
        raise TokenRejected("malformed token")
    token = parts[1]
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2 or not token.isascii():
        raise TokenRejected("malformed token")
    return token


class JwtVerifier:
    """Verifies RS256 JWTs against a JWKS URL, a set of issuers (or an issuer predicate) and an audience.

    `audience=None` makes every verification fail with "audience not configured" (fail closed).
    `clock` (monotonic seconds) only paces JWKS fetches; token times are checked against `now` (wall-clock
    seconds, `time.time()` when not given).
    """

    def __init__(
        self,
        jwks_url: str,
        issuers: IssuerPolicy,
        audience: str | None,
        *,
        leeway_s: float = 60.0,
        refresh_interval_s: float = 300.0,
        failure_backoff_s: float = 5.0,
        max_key_age_s: float = 24 * 3600.0,
        fetch_timeout_s: float = 10.0,
        http: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jwks_url = jwks_url
        if callable(issuers):
            self._issuer_ok: Callable[[Mapping[str, Any]], bool] = issuers
        else:
            accepted = frozenset([issuers] if isinstance(issuers, str) else issuers)
            self._issuer_ok = lambda claims: claims.get("iss") in accepted
        self.audience = audience.strip() if audience and audience.strip() else None
        self.leeway_s = leeway_s
        self.refresh_interval_s = refresh_interval_s
        self.failure_backoff_s = failure_backoff_s
        self.max_key_age_s = max_key_age_s
        self._timeout = aiohttp.ClientTimeout(total=fetch_timeout_s)
        self._http = http
        self._owns_http = http is None
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._lock = asyncio.Lock()
        self._last_success: float | None = None
        self._last_attempt: float | None = None
        self._last_failed = False
        self.fetch_count = 0
        """JWKS fetches attempted so far (for metrics and tests)."""

    # Public API ------------------------------------------------------------------------------------------

    async def verify(self, authorization_header: str | None, *, now: float | None = None) -> Claims:
        """The claims of the bearer token in `authorization_header`, or `TokenRejected`."""
        token = parse_bearer(authorization_header)
        kid = self._check_header(token)
        audience = self.audience
        if audience is None:
            raise TokenRejected("audience not configured")
        key = await self._key_for(kid)
        claims = self._decode(token, key)
        self._check_claims(claims, audience, time.time() if now is None else now)
        return Claims(claims)

    async def close(self) -> None:
        """Close the HTTP session if this verifier created it."""
        if self._owns_http and self._http is not None:
            await self._http.close()
        self._http = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Token checks (fast CPU work, kept on the loop) ------------------------------------------------------

    @staticmethod
    def _check_header(token: str) -> str:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise TokenRejected("algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise TokenRejected("missing key id")
        return kid

    @staticmethod
    def _decode(token: str, key: jwt.PyJWK) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key=key,
                algorithms=[ALGORITHM],
                # Times, issuer and audience are checked below, against an injectable `now`.
                options={"verify_signature": True, "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False, "verify_aud": False, "verify_iss": False, "require": []},
            )
        except jwt.InvalidSignatureError:
            raise TokenRejected("bad signature") from None
        except jwt.InvalidAlgorithmError:
            raise TokenRejected("algorithm not allowed") from None
        except jwt.DecodeError:
            raise TokenRejected("malformed token") from None
        except jwt.PyJWTError:
            raise TokenRejected("invalid token") from None

    def _check_claims(self, claims: Mapping[str, Any], audience: str, now: float) -> None:
        exp = _number(claims.get("exp"))
        if exp is None:
            raise TokenRejected("missing expiry")
        if now > exp + self.leeway_s:
            raise TokenRejected("token expired")
        for name in ("nbf", "iat"):
            if claims.get(name) is None:
                continue
            value = _number(claims[name])
            if value is None:
                raise TokenRejected("malformed token")
            if value > now + self.leeway_s:
                raise TokenRejected("token not yet valid")
        if not self._issuer_ok(claims):
            raise TokenRejected("wrong issuer")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        wanted = audience.casefold()
        if not any(isinstance(a, str) and a.strip().casefold() == wanted for a in audiences):
            raise TokenRejected("wrong audience")

    # Signing keys ----------------------------------------------------------------------------------------

    def _stale(self, now: float) -> bool:
        return self._last_success is None or now - self._last_success > self.max_key_age_s

    def _fetch_allowed(self, now: float, *, key_known: bool) -> bool:
        if self._last_attempt is None:
            return True
        since = now - self._last_attempt
        if self._last_failed:
            return since >= self.failure_backoff_s
        if key_known:  # a stale cache: refresh it
            return True
        return since >= self.refresh_interval_s

    async def _key_for(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is not None and not self._stale(self._clock()):
            return key
        async with self._lock:
            now = self._clock()
            key = self._keys.get(kid)
            if key is not None and not self._stale(now):
                return key  # another verification refreshed while we waited
            if self._fetch_allowed(now, key_known=key is not None):
                await self._refresh(now)
                key = self._keys.get(kid)
            if key is not None:
                return key
            if self._last_failed:
                raise TokenRejected("signing keys unavailable")
            raise TokenRejected("unknown signing key")

    async def _refresh(self, now: float) -> None:
        # A cancelled fetch (the caller went away) is not recorded: the next verification may fetch at once.
        self.fetch_count += 1
        try:
            keys = await self._fetch()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._last_attempt = now
            self._last_failed = True
            logger.warning("could not fetch signing keys from %s: %s: %.200s", self.jwks_url,
                           type(exc).__name__, exc)
            return
        self._last_attempt = now
        self._last_failed = False
        self._last_success = now
        self._keys = keys
        logger.info("loaded %d signing key(s) from %s", len(keys), self.jwks_url)

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        if self._http is None:
            self._http = aiohttp.ClientSession()
            self._owns_http = True
        # No redirects: keys come from the configured URL only.
        async with self._http.get(self.jwks_url, timeout=self._timeout, allow_redirects=False) as resp:
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}")
            body = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("JWKS document too large")
        return parse_jwks(json.loads(body))


def parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """The RS256-capable signing keys of a JWKS document, by kid. `ValueError` when none is usable."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if (not isinstance(kid, str) or not kid or entry.get("kty") != "RSA"
                or entry.get("use", "sig") != "sig" or entry.get("alg", ALGORITHM) != ALGORITHM):
            continue
        try:
            keys[kid] = jwt.PyJWK(entry, algorithm=ALGORITHM)
        except jwt.PyJWTError:
            logger.debug("skipping an unusable JWKS entry")
    if not keys:
        raise ValueError("no usable signing keys")
    return keys


class AcsTokenVerifier(JwtVerifier):
    """Verifies the ACS-signed JWTs on Call Automation callbacks and media WebSocket handshakes.

    `audience` is the ACS resource's immutable id (`ACS_RESOURCE_ID`); when it is None every verification
    fails with "audience not configured".
    """

    def __init__(
        self,
        jwks_url: str,
        issuer: str,
        audience: str | None,
        *,
        leeway_s: float = 60.0,
        refresh_interval_s: float = 300.0,
        http: aiohttp.ClientSession | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(jwks_url, [issuer], audience, leeway_s=leeway_s,
                         refresh_interval_s=refresh_interval_s, http=http, **kwargs)
        self.issuer = issuer

    @classmethod
    def from_settings(
        cls, settings: Settings, *, http: aiohttp.ClientSession | None = None
    ) -> AcsTokenVerifier:
        """From `CALLBOT_ACS_JWKS_URL`, `CALLBOT_ACS_ISSUER` and `ACS_RESOURCE_ID`."""
        return cls(settings.callbot_acs_jwks_url, settings.callbot_acs_issuer, settings.acs_resource_id,
                   http=http)
