"""A local stand-in for ACS's token signer: an RSA key pair, RS256 tokens, and a JWKS endpoint to serve.

Point `CALLBOT_ACS_JWKS_URL` at a `JwksServer` and `CALLBOT_ACS_ISSUER` at the identity's `issuer`, then send
`identity.authorization(ACS_RESOURCE_ID)` as the `Authorization` header, exactly as ACS would.

Standalone: `python -m callbot.local.acs.identity --audience <ACS_RESOURCE_ID> [--port 8089]` serves a JWKS
and prints the settings to use and a sample header.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Iterable
from typing import Any, Self

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from callbot.config import ACS_ISSUER

JWKS_PATH = "/calling/keys"  # the path ACS serves its keys on


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class LocalAcsIdentity:
    """An RSA-2048 key pair (generated at construction, ~50-100 ms: create once and share) that signs tokens
    the way ACS signs its callbacks and media-socket handshakes."""

    def __init__(
        self,
        *,
        issuer: str = ACS_ISSUER,
        kid: str | None = None,
        private_key: rsa.RSAPrivateKey | None = None,
        key_size: int = 2048,
    ) -> None:
        self.issuer = issuer
        self._private_key = private_key or rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        numbers = self._private_key.public_key().public_numbers()
        self._n = _b64url_uint(numbers.n)
        self._e = _b64url_uint(numbers.e)
        # Default kid: the RFC 7638 thumbprint of the public key.
        members = {"e": self._e, "kty": "RSA", "n": self._n}
        canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
        thumbprint = hashlib.sha256(canonical.encode("ascii")).digest()
        self.kid = kid or base64.urlsafe_b64encode(thumbprint).rstrip(b"=").decode("ascii")

    @classmethod
    async def create(cls, **kwargs: Any) -> LocalAcsIdentity:
        """Construct off the event loop (key generation is CPU work)."""
        return await asyncio.to_thread(cls, **kwargs)

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        return self._private_key

    def public_jwk(self) -> dict[str, Any]:
        return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self._n, "e": self._e}

    def jwks(self) -> dict[str, Any]:
        """A JWKS document holding this identity's public key."""
        return {"keys": [self.public_jwk()]}

    def public_key_pem(self) -> bytes:
        return self._private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def mint(self, audience: str, *, lifetime_s: float = 300.0, now: float | None = None,
             **extra_claims: Any) -> str:
        """An RS256 JWT with iss/aud/iat/nbf/exp/jti; `extra_claims` are added and may override those."""
        issued = time.time() if now is None else now
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience,
            "iat": int(issued),
            "nbf": int(issued),
            "exp": int(issued + lifetime_s),
            "jti": uuid.uuid4().hex,
        }
        claims.update(extra_claims)
        return self.sign(claims)

    def sign(self, claims: dict[str, Any], *, headers: dict[str, Any] | None = None) -> str:
        """RS256-sign exactly `claims` (no defaults added); `headers` are added to `{"kid": self.kid}`."""
        merged = {"kid": self.kid, **(headers or {})}
        return jwt.encode(claims, self._private_key, algorithm="RS256", headers=merged)

    def authorization(self, audience: str, **kwargs: Any) -> str:
        """`Bearer <token>`: the value of the `Authorization` header (keyword arguments as for `mint`)."""
        return f"Bearer {self.mint(audience, **kwargs)}"


class JwksServer:
    """Serves the JWKS of some identities over HTTP on `JWKS_PATH`.

    Mutable for tests: `identities` may be replaced (key rotation), `available = False` answers 503,
    `delay_s` slows each answer (cut short by `stop`); `request_count` counts the JWKS requests received and
    `requested` is set at each one.
    """

    def __init__(self, *identities: LocalAcsIdentity, path: str = JWKS_PATH) -> None:
        self.identities: list[LocalAcsIdentity] = list(identities)
        self.path = path
        self.available = True
        self.delay_s = 0.0
        self.request_count = 0
        self.requested = asyncio.Event()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    def set_identities(self, identities: Iterable[LocalAcsIdentity]) -> None:
        self.identities = list(identities)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [identity.public_jwk() for identity in self.identities]}

    def app(self) -> web.Application:
        """An aiohttp application with the JWKS route (to mount elsewhere or run on its own)."""
        app = web.Application()
        app.router.add_get(self.path, self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        self.request_count += 1
        self.requested.set()
        if self.delay_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.delay_s)
        if not self.available:
            return web.Response(status=503, text="unavailable")
        return web.json_response(self.jwks())

    @property
    def url(self) -> str:
        """The JWKS URL (after `start`)."""
        if self._url is None:
            raise RuntimeError("JwksServer is not started")
        return self._url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving; returns the JWKS URL. `port=0` picks a free port."""
        if self._runner is not None:
            return self.url
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        self._url = f"http://{shown}:{bound_port}{self.path}"
        return self._url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            self._stopping.set()
            await runner.cleanup()
            self._stopping = asyncio.Event()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve_jwks(*identities: LocalAcsIdentity, host: str = "127.0.0.1", port: int = 0) -> JwksServer:
    """A started `JwksServer` for `identities` (its `url` is the JWKS URL; `await server.stop()` to end)."""
    server = JwksServer(*identities)
    await server.start(host, port)
    return server


async def _serve_forever(args: argparse.Namespace) -> None:
    identity = await LocalAcsIdentity.create(issuer=args.issuer)
    server = await serve_jwks(identity, host=args.host, port=args.port)
    try:
        out = sys.stdout
        out.write(f"CALLBOT_ACS_JWKS_URL={server.url}\n")
        out.write(f"CALLBOT_ACS_ISSUER={identity.issuer}\n")
        out.write(f"ACS_RESOURCE_ID={args.audience}\n")
        lifetime = args.lifetime
        out.write(f"Authorization: {identity.authorization(args.audience, lifetime_s=lifetime)}\n")
        out.write("serving until interrupted (Ctrl-C)\n")
        out.flush()
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a local ACS-like JWKS and print a sample token.")
    parser.add_argument("--audience", required=True, help="the ACS_RESOURCE_ID the token is for")
    parser.add_argument("--issuer", default=ACS_ISSUER)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=3600.0, help="sample token lifetime, seconds")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve_forever(args))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
