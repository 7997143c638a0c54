"""AcsTokenVerifier / JwtVerifier against a real local JWKS server and real RS256 tokens."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callbot.acs.auth import AcsTokenVerifier, Claims, TokenRejected, parse_jwks
from callbot.config import ACS_ISSUER, load_settings
from callbot.local.acs.identity import JwksServer, LocalAcsIdentity

AUDIENCE = "0b1c2d3e-aaaa-bbbb-cccc-123456789abc"
NOW = 1_700_000_000.0
REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    """Monotonic clock for JWKS refresh pacing, advanced by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(payload).encode())
    return f"{head}.{body}.{b64(signature)}"


def claims_for(identity: LocalAcsIdentity, **over: Any) -> dict[str, Any]:
    claims = {"iss": identity.issuer, "aud": AUDIENCE, "iat": int(NOW), "nbf": int(NOW),
              "exp": int(NOW) + 300}
    claims.update(over)
    return claims


@pytest.fixture(scope="module")
def identity() -> LocalAcsIdentity:
    return LocalAcsIdentity()


@pytest.fixture(scope="module")
def other_identity() -> LocalAcsIdentity:
    return LocalAcsIdentity()


@pytest.fixture
async def server(identity: LocalAcsIdentity) -> AsyncIterator[JwksServer]:
    async with JwksServer(identity) as srv:
        yield srv


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def verifier(server: JwksServer, clock: FakeClock) -> AsyncIterator[AcsTokenVerifier]:
    v = AcsTokenVerifier(server.url, ACS_ISSUER, AUDIENCE, clock=clock, fetch_timeout_s=5.0)
    yield v
    await v.close()


async def rejected(verifier: AcsTokenVerifier, header: str | None, now: float = NOW) -> TokenRejected:
    with pytest.raises(TokenRejected) as info:
        await verifier.verify(header, now=now)
    return info.value


# Accepted tokens ------------------------------------------------------------------------------------------


async def test_valid_token_yields_its_claims(verifier: AcsTokenVerifier, identity: LocalAcsIdentity) -> None:
    header = identity.authorization(AUDIENCE, now=NOW, correlationId="corr-1")
    claims = await verifier.verify(header, now=NOW + 10)
    assert isinstance(claims, Claims)
    assert claims["aud"] == AUDIENCE
    assert claims.issuer == ACS_ISSUER
    assert claims["correlationId"] == "corr-1"
    assert claims.expires_at == NOW + 300
    assert "jti" in claims and AUDIENCE not in repr(claims)


async def test_scheme_is_case_insensitive_and_whitespace_tolerated(
    verifier: AcsTokenVerifier, identity: LocalAcsIdentity
) -> None:
    token = identity.mint(AUDIENCE, now=NOW)
    assert (await verifier.verify(f"  bearer   {token} ", now=NOW))["aud"] == AUDIENCE


async def test_audience_list_containing_ours_is_accepted(
    verifier: AcsTokenVerifier, identity: LocalAcsIdentity
) -> None:
    header = identity.authorization(AUDIENCE, now=NOW, aud=["someone-else", AUDIENCE.upper()])
    await verifier.verify(header, now=NOW)


async def test_verification_with_wall_clock_when_now_not_given(
    verifier: AcsTokenVerifier, identity: LocalAcsIdentity
) -> None:
    await verifier.verify(identity.authorization(AUDIENCE))


async def test_clock_skew_within_leeway_is_accepted(
    verifier: AcsTokenVerifier, identity: LocalAcsIdentity
) -> None:
    header = identity.authorization(AUDIENCE, now=NOW, lifetime_s=300)
    await verifier.verify(header, now=NOW + 300 + 59)  # just expired, within 60 s leeway
    await verifier.verify(header, now=NOW - 59)  # issued "in the future", within leeway


# Rejected tokens ------------------------------------------------------------------------------------------


async def test_expired_token_is_rejected(verifier: AcsTokenVerifier, identity: LocalAcsIdentity) -> None:
    header = identity.authorization(AUDIENCE, now=NOW, lifetime_s=300)
    assert (await rejected(verifier, header, now=NOW + 300 + 61)).reason == "token expired"


async def test_token_without_expiry_is_rejected(
    verifier: AcsTokenVerifier, identity: LocalAcsIdentity
) -> None:
    header = identity.authorization(AUDIENCE, now=NOW, exp=None)
    assert (await rejected(verifier, header)).reason == "missing expiry"


@pytest.mark.parametrize("claim", ["nbf", "iat"])
async def test_token_not_yet_valid_is_rejected(
    verifier: AcsTokenVerifier, identity: LocalAcsIdentity, claim: str
) -> None:
    header = identity.authorization(AUDIENCE, now=NOW, **{claim: int(NOW) + 120})
    assert (await rejected(verifier, header)).reason == "token not yet valid"


async def test_wrong_audience_is_rejected(verifier: AcsTokenVerifier, identity: LocalAcsIdentity) -> None:
    header = identity.authorization("another-resource-id", now=NOW)
    assert (await rejected(verifier, header)).reason == "wrong audience"


async def test_missing_audience_claim_is_rejected(
    verifier: AcsTokenVerifier, identity: LocalAcsIdentity
) -> None:
    header = identity.authorization(AUDIENCE, now=NOW, aud=None)
    assert (await rejected(verifier, header)).reason == "wrong audience"


async def test_wrong_issuer_is_rejected(verifier: AcsTokenVerifier, identity: LocalAcsIdentity) -> None:
    header = identity.authorization(AUDIENCE, now=NOW, iss="https://evil.example/")
    assert (await rejected(verifier, header)).reason == "wrong issuer"


async def test_unconfigured_audience_fails_closed_without_fetching_keys(
    server: JwksServer, identity: LocalAcsIdentity
) -> None:
    async with AcsTokenVerifier(server.url, ACS_ISSUER, None) as v:
        exc = await rejected(v, identity.authorization(AUDIENCE, now=NOW))
    assert exc.reason == "audience not configured"
    assert server.request_count == 0


async def test_alg_none_is_rejected(verifier: AcsTokenVerifier, identity: LocalAcsIdentity) -> None:
    token = forge({"alg": "none", "typ": "JWT", "kid": identity.kid}, claims_for(identity))
    assert (await rejected(verifier, f"Bearer {token}")).reason == "algorithm not allowed"


async def test_hs256_signed_with_the_public_key_is_rejected(
    verifier: AcsTokenVerifier, server: JwksServer, identity: LocalAcsIdentity
) -> None:
    """The classic key-confusion attack: HMAC keyed with the (public) RSA key PEM."""
    pem = identity.public_key_pem()
    for alg in ("HS256", "RS256"):  # also an HMAC signature smuggled under an RS256 header
        header = {"alg": alg, "typ": "JWT", "kid": identity.kid}
        head = b64(json.dumps(header).encode())
        body = b64(json.dumps(claims_for(identity)).encode())
        sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
        exc = await rejected(verifier, f"Bearer {head}.{body}.{b64(sig)}")
        assert exc.reason == ("algorithm not allowed" if alg == "HS256" else "bad signature")


async def test_tampered_payload_is_rejected(verifier: AcsTokenVerifier, identity: LocalAcsIdentity) -> None:
    token = identity.mint("another-resource-id", now=NOW)
    head, _body, sig = token.split(".")
    forged_body = b64(json.dumps(claims_for(identity)).encode())
    assert (await rejected(verifier, f"Bearer {head}.{forged_body}.{sig}")).reason == "bad signature"


async def test_tampered_signature_is_rejected(verifier: AcsTokenVerifier, identity: LocalAcsIdentity) -> None:
    head, body, sig = identity.mint(AUDIENCE, now=NOW).split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[10] ^= 0x01
    assert (await rejected(verifier, f"Bearer {head}.{body}.{b64(bytes(raw))}")).reason == "bad signature"


async def test_token_signed_by_another_key_under_our_kid_is_rejected(
    verifier: AcsTokenVerifier, identity: LocalAcsIdentity, other_identity: LocalAcsIdentity
) -> None:
    impostor = LocalAcsIdentity(kid=identity.kid, private_key=other_identity.private_key)
    assert (await rejected(verifier, impostor.authorization(AUDIENCE, now=NOW))).reason == "bad signature"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing authorization header"),
        ("", "missing authorization header"),
        ("   ", "missing authorization header"),
        ("Basic dXNlcjpwYXNz", "not a bearer token"),
        ("Bearer", "malformed token"),
        ("Bearer a.b.c extra", "malformed token"),
        ("Bearer not-a-jwt", "malformed token"),
        ("Bearer a.b.c", "malformed token"),
        ("Bearer ....", "malformed token"),
        ("Bearer " + "a" * 20000 + ".b.c", "malformed token"),
        ("Bearer é.b.c", "malformed token"),
        ("Bearer " + b64(b"[1,2]") + ".e30.", "malformed token"),
        ("Bearer " + b64(b"[" * 5000 + b"]" * 5000) + ".e30.", "malformed token"),
        ("Bearer " + b64(b'{"alg":"RS256","kid":"k","x":' + b"1" * 5000 + b"}") + ".e30.", "malformed token"),
        ("Bearer " + b64(b'{"alg":"RS256"}') + ".e30.", "missing key id"),
        ("Bearer " + b64(b'{"alg":"RS256","kid":7}') + ".e30.", "malformed token"),
    ],
)
async def test_garbage_headers_are_rejected(
    verifier: AcsTokenVerifier, server: JwksServer, header: str | None, reason: str
) -> None:
    assert (await rejected(verifier, header)).reason == reason
    assert server.request_count == 0  # nothing fetched for requests that fail before a key is needed


async def test_non_numeric_time_claims_are_rejected(
    verifier: AcsTokenVerifier, identity: LocalAcsIdentity
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"exp": "soon"}, "missing expiry"), ({"exp": True}, "missing expiry"), ({"nbf": "later"}, "malformed token"),
    ]
    for extra, reason in cases:
        exc = await rejected(verifier, identity.authorization(AUDIENCE, now=NOW, **extra))
        assert exc.reason == reason


async def test_non_finite_expiry_is_rejected(verifier: AcsTokenVerifier, identity: LocalAcsIdentity) -> None:
    # Python's json reads NaN and Infinity: a validly signed "never expires" must still fail.
    for bad in (float("nan"), float("inf")):
        token = identity.sign({**claims_for(identity), "exp": bad})
        assert (await rejected(verifier, f"Bearer {token}")).reason == "missing expiry"


# Signing keys: unknown kids, rotation, outages --------------------------------------------------------------


async def test_unknown_kid_is_rejected(
    verifier: AcsTokenVerifier, other_identity: LocalAcsIdentity, server: JwksServer
) -> None:
    exc = await rejected(verifier, other_identity.authorization(AUDIENCE, now=NOW))
    assert exc.reason == "unknown signing key"
    assert server.request_count == 1


async def test_flood_of_unknown_kids_fetches_at_most_once_per_interval(
    verifier: AcsTokenVerifier, identity: LocalAcsIdentity, server: JwksServer, clock: FakeClock
) -> None:
    await verifier.verify(identity.authorization(AUDIENCE, now=NOW), now=NOW)
    assert server.request_count == 1

    def forged(i: int) -> str:
        return "Bearer " + forge({"alg": "RS256", "kid": f"forged-{i}"}, claims_for(identity), b"x" * 256)

    results = await asyncio.gather(*(verifier.verify(forged(i), now=NOW) for i in range(100)),
                                   return_exceptions=True)
    assert all(isinstance(r, TokenRejected) and r.reason == "unknown signing key" for r in results)
    assert server.request_count == 1  # the interval since the last fetch has not passed

    clock.t += verifier.refresh_interval_s
    results = await asyncio.gather(*(verifier.verify(forged(i), now=NOW) for i in range(100, 200)),
                                   return_exceptions=True)
    assert all(isinstance(r, TokenRejected) for r in results)
    assert server.request_count == 2  # one refresh for the whole flood
    await verifier.verify(identity.authorization(AUDIENCE, now=NOW), now=NOW)  # good keys still work
    assert server.request_count == 2


async def test_rotated_key_is_picked_up_after_one_refresh(
    verifier: AcsTokenVerifier, identity: LocalAcsIdentity, other_identity: LocalAcsIdentity,
    server: JwksServer, clock: FakeClock,
) -> None:
    await verifier.verify(identity.authorization(AUDIENCE, now=NOW), now=NOW)
    server.set_identities([identity, other_identity])  # ACS publishes a new key
    new_header = other_identity.authorization(AUDIENCE, now=NOW)

    clock.t += 10  # too soon after the last fetch: no refresh yet
    assert (await rejected(verifier, new_header)).reason == "unknown signing key"
    assert server.request_count == 1

    clock.t += verifier.refresh_interval_s
    assert (await verifier.verify(new_header, now=NOW))["aud"] == AUDIENCE
    assert server.request_count == 2
    await verifier.verify(new_header, now=NOW)
    await verifier.verify(identity.authorization(AUDIENCE, now=NOW), now=NOW)
    assert server.request_count == 2


async def test_withdrawn_key_stops_being_trusted_once_cache_ages_out(
    verifier: AcsTokenVerifier, identity: LocalAcsIdentity, other_identity: LocalAcsIdentity,
    server: JwksServer, clock: FakeClock,
) -> None:
    header = identity.authorization(AUDIENCE, now=NOW)
    await verifier.verify(header, now=NOW)
    server.set_identities([other_identity])
    await verifier.verify(header, now=NOW)  # still cached
    clock.t += verifier.max_key_age_s + 1
    assert (await rejected(verifier, header)).reason == "unknown signing key"
    assert server.request_count == 2


async def test_stale_keys_are_kept_when_the_refresh_fails(
    verifier: AcsTokenVerifier, identity: LocalAcsIdentity, server: JwksServer, clock: FakeClock
) -> None:
    header = identity.authorization(AUDIENCE, now=NOW)
    await verifier.verify(header, now=NOW)
    server.available = False
    clock.t += verifier.max_key_age_s + 1
    await verifier.verify(header, now=NOW)
    assert server.request_count == 2


async def test_unavailable_jwks_rejects_and_retries_after_backoff(
    verifier: AcsTokenVerifier, identity: LocalAcsIdentity, server: JwksServer, clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.available = False
    header = identity.authorization(AUDIENCE, now=NOW)
    with caplog.at_level(logging.WARNING):
        assert (await rejected(verifier, header)).reason == "signing keys unavailable"
    assert "could not fetch signing keys" in caplog.text
    for _ in range(20):
        assert (await rejected(verifier, header)).reason == "signing keys unavailable"
    assert server.request_count == 1  # within the backoff: no new fetch

    server.available = True
    clock.t += verifier.failure_backoff_s
    await verifier.verify(header, now=NOW)
    assert server.request_count == 2


async def test_slow_jwks_times_out_as_unavailable(
    server: JwksServer, identity: LocalAcsIdentity
) -> None:
    server.delay_s = 1.0
    async with AcsTokenVerifier(server.url, ACS_ISSUER, AUDIENCE, fetch_timeout_s=0.2) as v:
        exc = await rejected(v, identity.authorization(AUDIENCE, now=NOW))
    assert exc.reason == "signing keys unavailable"


async def test_unreachable_jwks_is_unavailable(identity: LocalAcsIdentity) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with AcsTokenVerifier(f"http://127.0.0.1:{port}/keys", ACS_ISSUER, AUDIENCE) as v:
        exc = await rejected(v, identity.authorization(AUDIENCE, now=NOW))
    assert exc.reason == "signing keys unavailable"


@pytest.fixture
async def bad_jwks_base(identity: LocalAcsIdentity) -> AsyncIterator[str]:
    good = json.dumps(identity.jwks())

    async def big(_: web.Request) -> web.Response:
        padded = good[:-2] + " " * (2 * 1024 * 1024) + "]}"  # valid JSON, only too large
        assert json.loads(padded) == json.loads(good)
        return web.Response(text=padded, content_type="application/json")

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound("/good")

    async def good_keys(_: web.Request) -> web.Response:
        return web.Response(text=good, content_type="application/json")

    async def html(_: web.Request) -> web.Response:
        return web.Response(text="<html>", content_type="text/html")

    async def empty(_: web.Request) -> web.Response:
        return web.json_response({"keys": []})

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/good", good_keys)
    app.router.add_get("/html", html)
    app.router.add_get("/empty", empty)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


@pytest.mark.parametrize("path", ["/big", "/redirect", "/html", "/empty"])
async def test_unusable_jwks_documents_mean_keys_unavailable(
    bad_jwks_base: str, identity: LocalAcsIdentity, path: str
) -> None:
    async with AcsTokenVerifier(bad_jwks_base + path, ACS_ISSUER, AUDIENCE) as v:
        assert (await rejected(v, identity.authorization(AUDIENCE, now=NOW))).reason == "signing keys unavailable"
    async with AcsTokenVerifier(bad_jwks_base + "/good", ACS_ISSUER, AUDIENCE) as v:
        await v.verify(identity.authorization(AUDIENCE, now=NOW), now=NOW)


async def test_concurrent_verifications_share_one_fetch(
    verifier: AcsTokenVerifier, identity: LocalAcsIdentity, server: JwksServer
) -> None:
    server.delay_s = 0.2
    headers = [identity.authorization(AUDIENCE, now=NOW) for _ in range(30)]
    claims = await asyncio.gather(*(verifier.verify(h, now=NOW) for h in headers))
    assert len({c["jti"] for c in claims}) == 30
    assert server.request_count == 1


async def test_cancelled_fetch_does_not_block_the_next_verification(
    verifier: AcsTokenVerifier, identity: LocalAcsIdentity, server: JwksServer
) -> None:
    server.delay_s = 5.0
    header = identity.authorization(AUDIENCE, now=NOW)
    task = asyncio.create_task(verifier.verify(header, now=NOW))
    await asyncio.wait_for(server.requested.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    server.delay_s = 0.0
    assert (await verifier.verify(header, now=NOW))["aud"] == AUDIENCE
    assert server.request_count == 2


async def test_caller_supplied_http_session_is_used_and_left_open(
    server: JwksServer, identity: LocalAcsIdentity
) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        v = AcsTokenVerifier(server.url, ACS_ISSUER, AUDIENCE, http=http)
        await v.verify(identity.authorization(AUDIENCE))
        await v.close()
        assert not http.closed


def test_from_settings_reads_acs_fields() -> None:
    s = load_settings(_env_file=None, acs_resource_id=AUDIENCE, callbot_acs_jwks_url="http://127.0.0.1:1/keys",
                 callbot_acs_issuer="https://issuer.test")
    v = AcsTokenVerifier.from_settings(s)
    assert (v.jwks_url, v.issuer, v.audience) == ("http://127.0.0.1:1/keys", "https://issuer.test", AUDIENCE)
    assert AcsTokenVerifier.from_settings(load_settings(_env_file=None, acs_resource_id=None)).audience is None


def test_parse_jwks_keeps_only_rsa_signing_keys(identity: LocalAcsIdentity) -> None:
    good = identity.public_jwk()
    doc = {"keys": [good, {**good, "kid": "enc", "use": "enc"}, {**good, "kid": "es", "alg": "ES256"},
                    {"kty": "EC", "kid": "ec"}, {**good, "kid": "bad", "n": "!!"}, "junk",
                    {k: v for k, v in good.items() if k != "kid"}]}
    assert list(parse_jwks(doc)) == [identity.kid]
    bad: Any
    for bad in [None, [], {"keys": "x"}, {"keys": []}]:
        with pytest.raises(ValueError):
            parse_jwks(bad)


# Reasons and logs never carry the token ---------------------------------------------------------------------


async def test_rejections_never_echo_the_token(
    server: JwksServer, identity: LocalAcsIdentity, other_identity: LocalAcsIdentity,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens = [
        identity.mint(AUDIENCE, now=NOW - 10_000),
        identity.mint("wrong", now=NOW),
        identity.mint(AUDIENCE, now=NOW, iss="https://evil.example/"),
        other_identity.mint(AUDIENCE, now=NOW),
        forge({"alg": "none", "kid": identity.kid}, claims_for(identity)),
        identity.mint(AUDIENCE, now=NOW)[:-5] + "AAAAA",
        "secret-looking-garbage.with.dots",
    ]
    caplog.set_level(logging.DEBUG)
    async with AcsTokenVerifier(server.url, ACS_ISSUER, AUDIENCE) as v:
        for token in tokens:
            exc = await rejected(v, f"Bearer {token}")
            for part in [token, *(p for p in token.split(".") if len(p) >= 4)]:
                assert part not in str(exc) and part not in exc.reason and part not in repr(exc)
            assert token not in caplog.text
    server.available = False
    async with AcsTokenVerifier(server.url, ACS_ISSUER, AUDIENCE) as v:
        await rejected(v, f"Bearer {tokens[0]}")
    assert tokens[0] not in caplog.text


# Arbitrary input never raises anything but TokenRejected ---------------------------------------------------


@pytest.fixture(scope="module")
def sync_verifier(identity: LocalAcsIdentity) -> Iterator[tuple[asyncio.Runner, AcsTokenVerifier]]:
    with asyncio.Runner() as runner:
        srv = JwksServer(identity)
        runner.run(srv.start())
        v = AcsTokenVerifier(srv.url, ACS_ISSUER, AUDIENCE)
        yield runner, v
        runner.run(v.close())
        runner.run(srv.stop())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.none(),
        st.text(max_size=200),
        st.text(max_size=200).map(lambda t: "Bearer " + t),
        st.tuples(json_values, json_values, st.binary(max_size=300)).map(
            lambda p: "Bearer " + ".".join((b64(json.dumps(p[0]).encode()), b64(json.dumps(p[1]).encode()),
                                           b64(p[2])))
        ),
        st.tuples(st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "jku"]), json_values),
                  st.dictionaries(st.sampled_from(["iss", "aud", "exp", "nbf", "iat"]), json_values),
                  st.binary(max_size=300)).map(
            lambda p: "Bearer " + forge({"alg": "RS256", **p[0]}, p[1], p[2])
        ),
    )
)
def test_arbitrary_headers_only_ever_raise_token_rejected(
    sync_verifier: tuple[asyncio.Runner, AcsTokenVerifier], header: str | None
) -> None:
    runner, v = sync_verifier
    try:
        runner.run(v.verify(header, now=NOW))
    except TokenRejected as exc:
        assert exc.reason and len(exc.reason) < 40
    else:
        pytest.fail("an arbitrary header was accepted")


# The local identity on its own ------------------------------------------------------------------------------


async def test_standalone_jwks_server_serves_keys_that_verify_its_printed_token() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot.local.acs.identity", "--audience", AUDIENCE,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        out = [(await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode().strip() for _ in range(4)]
        env = dict(line.split("=", 1) for line in out[:3])
        assert out[3].startswith("Authorization: Bearer ")
        async with AcsTokenVerifier(env["CALLBOT_ACS_JWKS_URL"], env["CALLBOT_ACS_ISSUER"],
                                    env["ACS_RESOURCE_ID"]) as v:
            claims = await v.verify(out[3].removeprefix("Authorization: "))
        assert claims["aud"] == AUDIENCE and claims.issuer == ACS_ISSUER
    finally:
        proc.terminate()
        await proc.wait()


async def test_serve_jwks_helper_and_identity_jwks(identity: LocalAcsIdentity) -> None:
    from callbot.local.acs.identity import serve_jwks

    server = await serve_jwks(identity)
    try:
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/calling/keys")
        assert server.jwks() == identity.jwks()
        assert identity.jwks()["keys"][0]["kid"] == identity.kid
        async with AcsTokenVerifier(server.url, ACS_ISSUER, AUDIENCE) as v:
            await v.verify(identity.authorization(AUDIENCE))
    finally:
        await server.stop()
    with pytest.raises(RuntimeError):
        _ = JwksServer().url


async def test_identity_can_be_created_off_the_loop() -> None:
    a = await LocalAcsIdentity.create(issuer="https://issuer.test")
    assert a.issuer == "https://issuer.test" and a.kid
    assert a.mint("x", now=NOW) != a.mint("x", now=NOW)  # distinct jti
