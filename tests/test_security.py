"""Per-call URL tokens, the webhook secret check and Event Grid's Entra token check."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from callbot.config import load_settings
from callbot.local.acs.identity import JwksServer, LocalAcsIdentity
from callbot.security import (
    EVENTGRID_APP_ID,
    CallTokenSigner,
    EventGridAuth,
    TokenRejected,
    check_webhook_secret,
    entra_issuers,
)

KEY = b"k" * 32
NOW = 1_700_000_000.0
CALL = "c-5f0e8a"


def reject(signer: CallTokenSigner, call_id: str, token: str | None, *, purpose: str = "callback",
           now: float = NOW) -> TokenRejected:
    with pytest.raises(TokenRejected) as info:
        signer.verify(call_id, token, purpose=purpose, now=now)  # type: ignore[arg-type]
    return info.value


# Per-call URL tokens -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("purpose", ["callback", "media"])
def test_issued_token_verifies_for_its_call_and_purpose(purpose: str) -> None:
    signer = CallTokenSigner(KEY)
    token = signer.issue(CALL, purpose=purpose, expires_at=NOW + 300)  # type: ignore[arg-type]
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token) and len(token) < 64
    signer.verify(CALL, token, purpose=purpose, now=NOW)  # type: ignore[arg-type]
    signer.verify(CALL, token, purpose=purpose, now=NOW + 299.9)  # type: ignore[arg-type]


def test_token_expires_at_its_expiry() -> None:
    signer = CallTokenSigner(KEY)
    token = signer.issue(CALL, purpose="media", expires_at=NOW + 60.2)  # rounded up to NOW + 61
    signer.verify(CALL, token, purpose="media", now=NOW + 60.9)
    assert reject(signer, CALL, token, purpose="media", now=NOW + 61).reason == "token expired"
    assert reject(signer, CALL, token, purpose="media", now=NOW + 86400).reason == "token expired"


def test_token_for_another_call_is_rejected() -> None:
    signer = CallTokenSigner(KEY)
    token = signer.issue(CALL, purpose="callback", expires_at=NOW + 300)
    for other in ("c-5f0e8b", CALL + "x", CALL[:-1], "", CALL.upper()):
        assert reject(signer, other, token).reason == "bad signature"


def test_callback_token_cannot_open_the_media_socket() -> None:
    signer = CallTokenSigner(KEY)
    callback = signer.issue(CALL, purpose="callback", expires_at=NOW + 300)
    media = signer.issue(CALL, purpose="media", expires_at=NOW + 300)
    assert callback != media
    assert reject(signer, CALL, callback, purpose="media").reason == "bad signature"
    assert reject(signer, CALL, media, purpose="callback").reason == "bad signature"


def test_token_from_another_key_is_rejected() -> None:
    token = CallTokenSigner(b"a" * 32).issue(CALL, purpose="callback", expires_at=NOW + 300)
    assert reject(CallTokenSigner(b"b" * 32), CALL, token).reason == "bad signature"


def test_extending_the_expiry_breaks_the_signature() -> None:
    signer = CallTokenSigner(KEY)
    short = signer.issue(CALL, purpose="callback", expires_at=NOW + 10)
    long = signer.issue("other-call", purpose="callback", expires_at=NOW + 10**6)
    forged = long.split(".")[0] + "." + short.split(".")[1]
    assert reject(signer, CALL, forged, now=NOW + 100).reason == "bad signature"


def test_every_single_character_change_is_rejected() -> None:
    signer = CallTokenSigner(KEY)
    token = signer.issue(CALL, purpose="media", expires_at=NOW + 300)
    alphabet = "AQgw-_."
    for i, ch in enumerate(token):
        for repl in alphabet:
            if repl == ch:
                continue
            tampered = token[:i] + repl + token[i + 1:]
            with pytest.raises(TokenRejected):
                signer.verify(CALL, tampered, purpose="media", now=NOW)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing token"),
        ("", "missing token"),
        ("abc", "malformed token"),
        ("a.b.c", "malformed token"),
        (".", "malformed token"),
        ("AAAAAAAAAAA.", "malformed token"),
        ("AAAAAAAAAAA=.AAAA", "malformed token"),
        ("AAAAAAAAAAA.AAAA", "malformed token"),  # MAC too short
        ("AAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "malformed token"),  # expiry too short
        ("AAAAAAAAAAB." + "A" * 43, "malformed token"),  # non-canonical base64 (stray low bits)
        ("AAAAAAAAAAA." + "A" * 500, "malformed token"),
        ("AAAAAAAAAAA.A+/A", "malformed token"),
        ("AAAAAAAAAAA.é", "malformed token"),
        ("AAAAAAAAAAA." + "A" * 43, "bad signature"),
    ],
)
def test_malformed_tokens_are_rejected(token: str | None, reason: str) -> None:
    assert reject(CallTokenSigner(KEY), CALL, token).reason == reason


@given(st.text(max_size=300), st.sampled_from(["callback", "media"]))
def test_arbitrary_text_only_ever_raises_token_rejected(text: str, purpose: str) -> None:
    signer = CallTokenSigner(KEY)
    with pytest.raises(TokenRejected) as info:
        signer.verify(CALL, text, purpose=purpose, now=NOW)  # type: ignore[arg-type]
    assert info.value.reason in {"missing token", "malformed token", "bad signature"}


@given(st.text(max_size=100), st.floats(min_value=NOW + 1, max_value=NOW + 10**8))
def test_any_call_id_round_trips(call_id: str, expires_at: float) -> None:
    signer = CallTokenSigner(KEY)
    token = signer.issue(call_id, purpose="media", expires_at=expires_at)
    signer.verify(call_id, token, purpose="media", now=NOW)
    with pytest.raises(TokenRejected):
        signer.verify(call_id + "\x00", token, purpose="media", now=NOW)


def test_rejection_reasons_never_contain_the_token() -> None:
    signer = CallTokenSigner(KEY)
    token = signer.issue(CALL, purpose="callback", expires_at=NOW + 300)
    for exc in (reject(signer, "other", token), reject(signer, CALL, token, now=NOW + 10**6),
                reject(signer, CALL, token + "x"), reject(signer, CALL, token, purpose="media")):
        for part in (token, *token.split(".")):
            assert part not in str(exc) and part not in repr(exc)


def test_programming_errors_raise_value_error() -> None:
    signer = CallTokenSigner(KEY)
    with pytest.raises(ValueError):
        CallTokenSigner(b"short")
    with pytest.raises(ValueError):
        signer.issue(CALL, purpose="admin", expires_at=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        signer.verify(CALL, "x", purpose="admin", now=NOW)  # type: ignore[arg-type]
    for bad in (float("nan"), float("inf"), -1.0, 2.0**64):
        with pytest.raises(ValueError):
            signer.issue(CALL, purpose="media", expires_at=bad)


def test_signers_from_the_same_signing_key_interoperate(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(_env_file=None, callbot_signing_key="correct horse battery staple")
    with caplog.at_level(logging.DEBUG):
        a, b = CallTokenSigner.from_settings(settings), CallTokenSigner.from_settings(settings)
    b.verify(CALL, a.issue(CALL, purpose="media", expires_at=NOW + 5), purpose="media", now=NOW)
    assert "correct horse" not in caplog.text and "correct horse" not in repr(a)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_missing_signing_key_uses_a_random_key_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(_env_file=None, callbot_signing_key="  ")
    with caplog.at_level(logging.WARNING, logger="callbot.security"):
        a, b = CallTokenSigner.from_settings(settings), CallTokenSigner.from_settings(settings)
    assert "CALLBOT_SIGNING_KEY" in caplog.text and "replica" in caplog.text
    token = a.issue(CALL, purpose="callback", expires_at=NOW + 5)
    a.verify(CALL, token, purpose="callback", now=NOW)
    assert reject(b, CALL, token).reason == "bad signature"


# Webhook secret ---------------------------------------------------------------------------------------------


def test_webhook_secret_matches_only_the_exact_secret() -> None:
    secret = SecretStr("s3cr3t-ü")
    assert check_webhook_secret(secret, "s3cr3t-ü")
    for wrong in ("s3cr3t-u", "s3cr3t-ü ", "S3CR3T-Ü", "s3cr3t", "", "s3cr3t-üx", "\udcff"):
        assert not check_webhook_secret(secret, wrong)
    assert not check_webhook_secret(secret, None)


def test_webhook_secret_check_never_passes_when_unconfigured() -> None:
    assert not check_webhook_secret(None, "anything")
    assert not check_webhook_secret(None, None)
    assert not check_webhook_secret(SecretStr(""), "")


# Event Grid with Microsoft Entra ----------------------------------------------------------------------------

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "11111111-2222-3333-4444-555555555555"
EG_AUDIENCE = "api://callbot-webhook"
V1, V2 = f"https://sts.windows.net/{TENANT}/", f"https://login.microsoftonline.com/{TENANT}/v2.0"


@pytest.fixture(scope="module")
def entra() -> LocalAcsIdentity:
    return LocalAcsIdentity(issuer=V1)


@pytest.fixture
async def entra_jwks(entra: LocalAcsIdentity) -> AsyncIterator[JwksServer]:
    async with JwksServer(entra) as server:
        yield server


async def eg_reject(auth: EventGridAuth, header: str | None) -> str:
    try:
        with pytest.raises(TokenRejected) as info:
            await auth.verify(header, now=NOW)
    finally:
        await auth.close()
    return info.value.reason


def test_entra_issuers_cover_v1_and_v2() -> None:
    assert entra_issuers(TENANT) == {V1, V2}


@pytest.mark.parametrize(("iss", "caller_claim"), [(V1, "appid"), (V2, "azp")])
async def test_event_grid_token_from_our_tenant_is_accepted(
    entra: LocalAcsIdentity, entra_jwks: JwksServer, iss: str, caller_claim: str
) -> None:
    auth = EventGridAuth(EG_AUDIENCE, tenant_id=TENANT, jwks_url=entra_jwks.url)
    header = entra.authorization(EG_AUDIENCE, now=NOW, iss=iss, tid=TENANT, **{caller_claim: EVENTGRID_APP_ID})
    claims = await auth.verify(header, now=NOW)
    assert claims["iss"] == iss
    await auth.close()


async def test_event_grid_token_from_another_tenant_is_rejected(
    entra: LocalAcsIdentity, entra_jwks: JwksServer
) -> None:
    auth = EventGridAuth(EG_AUDIENCE, tenant_id=TENANT, jwks_url=entra_jwks.url)
    header = entra.authorization(EG_AUDIENCE, now=NOW, iss=f"https://sts.windows.net/{OTHER_TENANT}/",
                                 tid=OTHER_TENANT, appid=EVENTGRID_APP_ID)
    assert await eg_reject(auth, header) == "wrong issuer"


async def test_without_tenant_the_issuer_must_match_the_tokens_own_tenant(
    entra: LocalAcsIdentity, entra_jwks: JwksServer
) -> None:
    auth = EventGridAuth(EG_AUDIENCE, jwks_url=entra_jwks.url)
    ok = entra.authorization(EG_AUDIENCE, now=NOW, iss=V2, tid=TENANT, azp=EVENTGRID_APP_ID)
    await auth.verify(ok, now=NOW)
    mismatched = entra.authorization(EG_AUDIENCE, now=NOW, iss=V1, tid=OTHER_TENANT, appid=EVENTGRID_APP_ID)
    assert await eg_reject(auth, mismatched) == "wrong issuer"
    auth = EventGridAuth(EG_AUDIENCE, jwks_url=entra_jwks.url)
    foreign = entra.authorization(EG_AUDIENCE, now=NOW, iss="https://evil.example/", tid=TENANT,
                                  appid=EVENTGRID_APP_ID)
    assert await eg_reject(auth, foreign) == "wrong issuer"


async def test_event_grid_token_from_another_application_is_rejected(
    entra: LocalAcsIdentity, entra_jwks: JwksServer
) -> None:
    auth = EventGridAuth(EG_AUDIENCE, tenant_id=TENANT, jwks_url=entra_jwks.url)
    header = entra.authorization(EG_AUDIENCE, now=NOW, tid=TENANT, appid="00000000-0000-0000-0000-000000000001")
    assert await eg_reject(auth, header) == "wrong caller application"
    auth = EventGridAuth(EG_AUDIENCE, tenant_id=TENANT, jwks_url=entra_jwks.url, app_id=None)
    await auth.verify(header, now=NOW)
    await auth.close()


async def test_event_grid_required_role(entra: LocalAcsIdentity, entra_jwks: JwksServer) -> None:
    role = "AzureEventGridSecureWebhookSubscriber"
    auth = EventGridAuth(EG_AUDIENCE, tenant_id=TENANT, jwks_url=entra_jwks.url, required_role=role)
    with_role = entra.authorization(EG_AUDIENCE, now=NOW, appid=EVENTGRID_APP_ID, roles=[role])
    await auth.verify(with_role, now=NOW)
    without = entra.authorization(EG_AUDIENCE, now=NOW, appid=EVENTGRID_APP_ID, roles=["Other"])
    assert await eg_reject(auth, without) == "missing role"


async def test_event_grid_wrong_audience_and_missing_header(
    entra: LocalAcsIdentity, entra_jwks: JwksServer
) -> None:
    auth = EventGridAuth(EG_AUDIENCE, tenant_id=TENANT, jwks_url=entra_jwks.url)
    header = entra.authorization("api://someone-else", now=NOW, appid=EVENTGRID_APP_ID)
    assert await eg_reject(auth, header) == "wrong audience"
    auth = EventGridAuth(EG_AUDIENCE, tenant_id=TENANT, jwks_url=entra_jwks.url)
    assert await eg_reject(auth, None) == "missing authorization header"


async def test_event_grid_auth_from_settings() -> None:
    assert EventGridAuth.from_settings(load_settings(_env_file=None)) is None
    auth = EventGridAuth.from_settings(load_settings(_env_file=None, callbot_eventgrid_audience=EG_AUDIENCE))
    assert auth is not None
    assert auth.verifier.audience == EG_AUDIENCE
    assert auth.verifier.jwks_url == "https://login.microsoftonline.com/common/discovery/v2.0/keys"
    await auth.close()
